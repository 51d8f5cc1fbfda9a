<?php
/*
 * Prints the plugin's signature for the inputs given as arguments, for comparison with
 * strata-wire's auth::sign: php sign.php SECRET METHOD HOST PATH TIMESTAMP_MS NONCE BODY
 * With "parse-secret FILE" instead, prints the secret the plugin reads from FILE (or
 * "none"); with "plugin-key SECRET", the key= of its X-Strata-Plugin header.
 */

require __DIR__ . '/../includes/signer.php';

if (($argv[1] ?? '') === 'plugin-key') {
    echo Strata\Signer::plugin_key($argv[2]);
    exit(0);
}
if (($argv[1] ?? '') === 'parse-secret') {
    $s = Strata\Signer::parse_secret((string) file_get_contents($argv[2]));
    echo $s ?? 'none';
    exit(0);
}
if ($argc !== 8) {
    fwrite(STDERR, "usage: php sign.php SECRET METHOD HOST PATH TIMESTAMP_MS NONCE BODY\n");
    exit(2);
}
echo Strata\Signer::sign($argv[1], $argv[2], $argv[3], $argv[4], (int) $argv[5], $argv[6], $argv[7]);
