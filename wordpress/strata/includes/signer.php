<?php
/**
 * Signing of admin requests with the cluster secret: scheme v2 of strata-wire's auth module,
 * byte for byte. No WordPress function is used here, so tests can load it alone.
 *
 * The signature is the hex HMAC-SHA256, keyed with the secret, of
 * "strata-admin-v2\nMETHOD\nHOST\nPATH\nTIMESTAMP\nNONCE\nBODY" (no line feed after BODY),
 * HOST being the authority of the admin URL, exactly as the URL spells it.
 */

namespace Strata;

final class Signer
{
    /** First line of the signed string: names the scheme. */
    public const DOMAIN = 'strata-admin-v2';
    /** Named before the hex in X-Strata-Signature. */
    public const SCHEME = 'v2';
    /** The shortest secret a node accepts. */
    public const MIN_SECRET_LEN = 16;

    /** The X-Strata-Signature value: "v2=" and the lower-case hex MAC. */
    public static function sign(string $secret, string $method, string $host, string $path, int $timestamp_ms, string $nonce, string $body): string
    {
        $text = implode("\n", [self::DOMAIN, $method, $host, $path, (string) $timestamp_ms, $nonce]) . "\n" . $body;
        return self::SCHEME . '=' . hash_hmac('sha256', $text, $secret);
    }

    /** What plugin_key() is the MAC of (strata-wire's auth::plugin_key). */
    public const KEY_DOMAIN = 'strata-plugin-key';

    /**
     * The key= of the X-Strata-Plugin header: the first 16 hex digits of the HMAC-SHA256 of
     * KEY_DOMAIN keyed with the secret. A node that computes the same key from its own
     * secret knows that this plugin signs its bans for that node's cluster.
     */
    public static function plugin_key(string $secret): string
    {
        return substr(hash_hmac('sha256', self::KEY_DOMAIN, $secret), 0, 16);
    }

    /** A fresh nonce: 32 hex digits. */
    public static function nonce(): string
    {
        return bin2hex(random_bytes(16));
    }

    /** The current Unix time in milliseconds. */
    public static function now_ms(): int
    {
        return (int) floor(microtime(true) * 1000);
    }

    /**
     * The secret in the contents of a secret file, as strata-wire's parse_secret reads it:
     * surrounding whitespace dropped; null when fewer than 16 characters remain.
     */
    public static function parse_secret(string $contents): ?string
    {
        $s = trim($contents, " \t\n\r\x0B\x0C");
        return strlen($s) >= self::MIN_SECRET_LEN ? $s : null;
    }

    /**
     * The headers of a signed request to $authority (the admin URL's host[:port]) for
     * $method $path with $body, signed now with a fresh nonce.
     *
     * @return array<string,string>
     */
    public static function headers(string $secret, string $method, string $authority, string $path, string $body): array
    {
        $ts = self::now_ms();
        $nonce = self::nonce();
        return [
            'Host' => $authority,
            'X-Strata-Timestamp' => (string) $ts,
            'X-Strata-Nonce' => $nonce,
            'X-Strata-Signature' => self::sign($secret, $method, $authority, $path, $ts, $nonce, $body),
        ];
    }
}
