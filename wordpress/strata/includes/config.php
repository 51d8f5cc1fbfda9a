<?php
/**
 * The plugin's configuration: constants in wp-config.php first, options (set on the settings
 * page) as the fallback for the node list and the send mode. The secret comes from a file or
 * a constant only, never from the database.
 */

namespace Strata;

final class Config
{
    /** Option holding the node list when STRATA_NODES is not defined. */
    public const OPTION_NODES = 'strata_nodes';
    /** Option holding the send mode when STRATA_SEND is not defined. */
    public const OPTION_SEND = 'strata_send';
    /** Seconds a node may take to answer (connect, send, read) when STRATA_TIMEOUT is unset. */
    public const DEFAULT_TIMEOUT = 1.0;

    /**
     * The admin URLs of the nodes (http://10.0.0.2:9080), in the order they are tried.
     * STRATA_NODES may be an array or a string of URLs separated by spaces, commas or lines.
     *
     * @return string[]
     */
    public static function nodes(): array
    {
        $raw = defined('STRATA_NODES') ? constant('STRATA_NODES') : get_option(self::OPTION_NODES, '');
        return self::parse_nodes($raw);
    }

    /** Whether the node list comes from a constant (the settings page cannot change it). */
    public static function nodes_from_constant(): bool
    {
        return defined('STRATA_NODES');
    }

    /**
     * Reads a node list: valid http(s) URLs with a host and no path, query or user, without
     * trailing slashes and duplicates.
     *
     * @param mixed $raw
     * @return string[]
     */
    public static function parse_nodes($raw): array
    {
        $items = is_array($raw) ? $raw : preg_split('/[\s,]+/', (string) $raw, -1, PREG_SPLIT_NO_EMPTY);
        $out = [];
        foreach ($items as $item) {
            $url = rtrim(trim((string) $item), '/');
            if (self::authority($url) !== null && !in_array($url, $out, true)) {
                $out[] = $url;
            }
        }
        return $out;
    }

    /**
     * The authority of an admin URL exactly as written (`10.0.0.2:9080`, `[::1]:9080`,
     * `node1`): what the request's Host header and its signature name. Null when the URL is
     * not http(s)://authority with nothing after it.
     */
    public static function authority(string $url): ?string
    {
        if (!preg_match('~^(https?)://([^/?#@\s]+)$~i', $url, $m)) {
            return null;
        }
        return $m[2];
    }

    /** 'one' (the first node that answers, which broadcasts) or 'each' (every node). */
    public static function send_mode(): string
    {
        $raw = defined('STRATA_SEND') ? constant('STRATA_SEND') : get_option(self::OPTION_SEND, 'one');
        return $raw === 'each' ? 'each' : 'one';
    }

    /** Seconds each node may take, from STRATA_TIMEOUT (0.1 to 30). */
    public static function timeout(): float
    {
        $t = defined('STRATA_TIMEOUT') ? (float) constant('STRATA_TIMEOUT') : self::DEFAULT_TIMEOUT;
        return max(0.1, min(30.0, $t > 0 ? $t : self::DEFAULT_TIMEOUT));
    }

    /**
     * The cluster secret and where it came from.
     *
     * @return array{secret:?string,source:string,problem:?string}
     *   secret null with a problem saying why (none configured, unreadable, too short).
     */
    public static function secret(): array
    {
        static $cached = null;
        if ($cached !== null) {
            return $cached;
        }
        if (defined('STRATA_SECRET')) {
            $s = Signer::parse_secret((string) constant('STRATA_SECRET'));
            $cached = [
                'secret' => $s,
                'source' => 'constant STRATA_SECRET',
                'problem' => $s === null ? 'STRATA_SECRET holds fewer than ' . Signer::MIN_SECRET_LEN . ' characters' : null,
            ];
            return $cached;
        }
        if (defined('STRATA_SECRET_FILE')) {
            $path = (string) constant('STRATA_SECRET_FILE');
            $contents = is_readable($path) ? @file_get_contents($path) : false;
            if ($contents === false) {
                $cached = ['secret' => null, 'source' => "file $path", 'problem' => "cannot read $path (it must be readable by the PHP user)"];
                return $cached;
            }
            $s = Signer::parse_secret($contents);
            $cached = [
                'secret' => $s,
                'source' => "file $path",
                'problem' => $s === null ? "$path holds fewer than " . Signer::MIN_SECRET_LEN . ' characters' : null,
            ];
            return $cached;
        }
        $cached = ['secret' => null, 'source' => 'none', 'problem' => 'neither STRATA_SECRET_FILE nor STRATA_SECRET is defined in wp-config.php'];
        return $cached;
    }

    /** Whether bans can be sent: at least one node and a usable secret. */
    public static function ready(): bool
    {
        return self::nodes() !== [] && self::secret()['secret'] !== null;
    }
}
