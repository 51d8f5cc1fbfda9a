<?php
/*
 * Loader for installing Strata as a must-use plugin: WordPress loads only the files directly
 * in wp-content/mu-plugins/, so copy this file to wp-content/mu-plugins/strata.php and the
 * plugin's folder to wp-content/mu-plugins/strata/. (In the plugin's own folder this file
 * does nothing.)
 */

if (is_file(__DIR__ . '/strata/strata.php')) {
    require_once __DIR__ . '/strata/strata.php';
}
