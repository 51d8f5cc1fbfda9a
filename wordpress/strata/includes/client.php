<?php
/**
 * Signed requests to the nodes' admin listeners: a small HTTP/1.1 client over PHP streams,
 * so the Host header and the body are exactly the bytes signed, nothing depends on the curl
 * extension or WP_HTTP_BLOCK_EXTERNAL, and every request is bounded by one deadline.
 */

namespace Strata;

final class Client
{
    /** Most bytes of an answer read. */
    private const MAX_ANSWER = 1048576;

    /**
     * Sends one signed request to the admin listener at $base (http://10.0.0.2:9080).
     *
     * @return array{status:int,body:string,error:?string,ms:float}
     *   status 0 with error set when no HTTP answer came within $timeout seconds.
     */
    public static function request(string $secret, string $method, string $base, string $path, string $body, float $timeout): array
    {
        $start = microtime(true);
        $done = static function (int $status, string $answer, ?string $error) use ($start): array {
            return ['status' => $status, 'body' => $answer, 'error' => $error, 'ms' => round((microtime(true) - $start) * 1000, 1)];
        };
        $authority = Config::authority($base);
        if ($authority === null) {
            return $done(0, '', "$base is not an admin URL such as http://10.0.0.2:9080");
        }
        $tls = stripos($base, 'https://') === 0;
        if (str_starts_with($authority, '[')) {
            $close = strpos($authority, ']');
            $host = substr($authority, 0, $close + 1);
            $port = substr($authority, $close + 1);
        } else {
            $colon = strrpos($authority, ':');
            $host = $colon === false ? $authority : substr($authority, 0, $colon);
            $port = $colon === false ? '' : substr($authority, $colon);
        }
        $port = $port === '' ? ($tls ? 443 : 80) : (int) ltrim($port, ':');
        $target = ($tls ? 'tls://' : 'tcp://') . $host . ':' . $port;

        $errno = 0;
        $errstr = '';
        $context = stream_context_create($tls ? ['ssl' => ['peer_name' => trim($host, '[]')]] : []);
        $sock = @stream_socket_client($target, $errno, $errstr, $timeout, STREAM_CLIENT_CONNECT, $context);
        if ($sock === false) {
            return $done(0, '', "cannot connect to $authority: " . ($errstr !== '' ? $errstr : "error $errno"));
        }
        $deadline = $start + $timeout;
        $headers = Signer::headers($secret, $method, $authority, $path, $body);
        $headers['User-Agent'] = 'strata-wordpress/' . (defined('STRATA_PLUGIN_VERSION') ? STRATA_PLUGIN_VERSION : '0');
        $headers['Connection'] = 'close';
        if ($body !== '') {
            $headers['Content-Type'] = 'application/json';
        }
        if ($body !== '' || $method === 'POST') {
            $headers['Content-Length'] = (string) strlen($body);
        }
        $head = "$method $path HTTP/1.1\r\n";
        foreach ($headers as $name => $value) {
            $head .= "$name: $value\r\n";
        }
        $out = $head . "\r\n" . $body;
        $raw = '';
        try {
            while ($out !== '') {
                if (!self::wait($sock, $deadline)) {
                    return $done(0, '', "$authority: no answer within {$timeout}s (sending)");
                }
                $n = @fwrite($sock, $out);
                if ($n === false || $n === 0) {
                    return $done(0, '', "$authority: connection closed while sending");
                }
                $out = (string) substr($out, $n);
            }
            while (!feof($sock) && strlen($raw) < self::MAX_ANSWER) {
                if (!self::wait($sock, $deadline)) {
                    return $done(0, '', "$authority: no answer within {$timeout}s");
                }
                $chunk = @fread($sock, 8192);
                if ($chunk === false) {
                    break;
                }
                $raw .= $chunk;
                if (self::complete($raw)) {
                    break;
                }
            }
        } finally {
            fclose($sock);
        }
        $parsed = self::parse($raw);
        if ($parsed === null) {
            return $done(0, '', "$authority: no HTTP answer");
        }
        return $done($parsed[0], $parsed[1], null);
    }

    /** Sets the socket's timeout to what is left before $deadline; false when nothing is. */
    private static function wait($sock, float $deadline): bool
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            return false;
        }
        stream_set_timeout($sock, (int) $left, (int) (($left - (int) $left) * 1e6));
        return true;
    }

    /** Whether $raw holds a whole answer with a Content-Length (else the close ends it). */
    private static function complete(string $raw): bool
    {
        $end = strpos($raw, "\r\n\r\n");
        if ($end === false || !preg_match('/^content-length:\s*(\d+)\s*$/mi', substr($raw, 0, $end), $m)) {
            return false;
        }
        return strlen($raw) - $end - 4 >= (int) $m[1];
    }

    /**
     * The status and body of a raw HTTP/1.1 answer (chunked bodies decoded).
     *
     * @return array{0:int,1:string}|null
     */
    public static function parse(string $raw): ?array
    {
        $end = strpos($raw, "\r\n\r\n");
        if ($end === false || !preg_match('~^HTTP/1\.[01] (\d{3})~', $raw, $m)) {
            return null;
        }
        $head = substr($raw, 0, $end);
        $body = substr($raw, $end + 4);
        if (preg_match('/^content-length:\s*(\d+)\s*$/mi', $head, $cl)) {
            $body = substr($body, 0, (int) $cl[1]);
        } elseif (preg_match('/^transfer-encoding:.*chunked/mi', $head)) {
            $decoded = '';
            while (($line = strpos($body, "\r\n")) !== false) {
                $size = hexdec(trim(explode(';', substr($body, 0, $line))[0]));
                if ($size <= 0) {
                    break;
                }
                $decoded .= substr($body, $line + 2, (int) $size);
                $body = (string) substr($body, $line + 2 + (int) $size + 2);
            }
            $body = $decoded;
        }
        return [(int) $m[1], $body];
    }
}
