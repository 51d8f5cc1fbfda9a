<?php
/**
 * Bans collected during one PHP request and sent once, at shutdown (after the answer went
 * to the client where PHP-FPM allows it): one signed POST /ban per node with the whole
 * array. Every sending is recorded in a non-autoloaded option (the last 20) and failures
 * also go to the PHP error log.
 */

namespace Strata;

final class Bans
{
    /** Option holding the last sendings, newest first (not autoloaded). */
    public const OPTION_LOG = 'strata_last_bans';
    /** How many sendings the log keeps. */
    public const LOG_SIZE = 20;

    /** @var array<int,array> Bans collected so far in this request. */
    private static array $pending = [];
    /** Whether the shutdown sender is registered. */
    private static bool $registered = false;

    /** Queues bans for the end of this request. */
    public static function add(array $bans): void
    {
        if ($bans === []) {
            return;
        }
        foreach ($bans as $ban) {
            self::$pending[] = $ban;
        }
        if (!self::$registered) {
            self::$registered = true;
            // Late, so that changes made by other shutdown callbacks are collected too.
            add_action('shutdown', [self::class, 'flush_at_shutdown'], 1000);
        }
    }

    /** The bans queued so far (for tests and WP-CLI). */
    public static function pending(): array
    {
        return self::$pending;
    }

    /** Sends what was collected, after finishing the answer to the client when possible. */
    public static function flush_at_shutdown(): void
    {
        if (self::$pending === [] || !Config::ready()) {
            self::$pending = [];
            return;
        }
        if (PHP_SAPI !== 'cli' && function_exists('fastcgi_finish_request')) {
            // The visitor or editor has the whole answer; the bans cost them nothing.
            fastcgi_finish_request();
        }
        self::flush();
    }

    /**
     * Sends what was collected now and empties the queue.
     *
     * @return array|null the log entry of the sending; null when there was nothing to send
     *   or no node or secret is configured.
     */
    public static function flush(): ?array
    {
        $bans = Rules::finish(self::$pending);
        self::$pending = [];
        if ($bans === [] || !Config::ready()) {
            return null;
        }
        return self::send($bans);
    }

    /**
     * Sends $bans to the nodes now: in mode "one" to the first node that accepts them (it
     * broadcasts to its siblings), else to every node. Records the sending.
     *
     * @return array the log entry: time, bans, mode, ok, and per node tried its answer.
     */
    public static function send(array $bans): array
    {
        $secret = Config::secret()['secret'];
        $nodes = Config::nodes();
        $mode = Config::send_mode();
        $entry = ['time' => time(), 'bans' => Rules::describe($bans), 'count' => count($bans), 'mode' => $mode, 'ok' => false, 'nodes' => []];
        if ($secret === null || $nodes === []) {
            $entry['nodes'][] = ['node' => '-', 'status' => 0, 'ms' => 0, 'answer' => '', 'error' => Config::secret()['problem'] ?? 'no node configured'];
            self::record($entry);
            return $entry;
        }
        $body = json_encode(array_values($bans), JSON_UNESCAPED_SLASHES);
        $timeout = Config::timeout();
        $accepted = 0;
        foreach ($nodes as $node) {
            $r = Client::request($secret, 'POST', $node, '/ban', $body, $timeout);
            $entry['nodes'][] = [
                'node' => $node,
                'status' => $r['status'],
                'ms' => $r['ms'],
                'answer' => substr($r['body'], 0, 300),
                'error' => $r['error'],
            ];
            if ($r['status'] === 200) {
                $accepted++;
                if ($mode === 'one') {
                    break;
                }
            } else {
                $why = $r['error'] ?? "answered {$r['status']}: " . substr($r['body'], 0, 200);
                error_log("strata: ban ({$entry['bans']}) not accepted by $node: $why");
            }
        }
        $entry['ok'] = $mode === 'one' ? $accepted === 1 : $accepted === count($nodes);
        if ($accepted === 0) {
            error_log("strata: no node accepted the ban ({$entry['bans']}); pages may stay stale until their TTL");
        }
        self::record($entry);
        return $entry;
    }

    /** Adds a sending to the log option, keeping the last LOG_SIZE. */
    private static function record(array $entry): void
    {
        $log = get_option(self::OPTION_LOG, []);
        if (!is_array($log)) {
            $log = [];
        }
        array_unshift($log, $entry);
        update_option(self::OPTION_LOG, array_slice($log, 0, self::LOG_SIZE), false);
    }

    /** The last sendings, newest first. */
    public static function log(): array
    {
        $log = get_option(self::OPTION_LOG, []);
        return is_array($log) ? $log : [];
    }
}
