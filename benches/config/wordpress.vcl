vcl 4.1;

# Varnish in front of WordPress, configured the way such sites usually run it:
# anonymous GET/HEAD traffic is cached, logged-in users, commenters,
# password-protected posts and the admin are passed, cookies are stripped from
# everything else, text responses are stored gzipped (Varnish gunzips on the
# fly for clients that do not accept gzip), 1h TTL when the origin does not
# say otherwise, 1h grace, and a successful POST bans the whole host.
#
# Used by benches/run.sh: varnishd -a 127.0.0.1:6081 -s malloc,512m.

import std;

backend wordpress {
    .host = "127.0.0.1";
    .port = "8081";
    .connect_timeout = 2s;
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 10s;
}

sub vcl_recv {
    # Normalise Accept-Encoding so that variants do not multiply.
    if (req.http.Accept-Encoding) {
        if (req.http.Accept-Encoding ~ "gzip") {
            set req.http.Accept-Encoding = "gzip";
        } else {
            unset req.http.Accept-Encoding;
        }
    }

    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }

    if (req.url ~ "^/wp-(admin|login\.php|cron\.php)" || req.url ~ "^/xmlrpc\.php" || req.url ~ "[?&]preview=true") {
        return (pass);
    }

    if (req.http.Authorization) {
        return (pass);
    }

    if (req.http.Cookie ~ "(wordpress_logged_in_|wp-postpass_|comment_author_)") {
        return (pass);
    }

    # Any other cookie (analytics, wp-settings, test cookies) does not change the page.
    unset req.http.Cookie;

    return (hash);
}

sub vcl_backend_response {
    # A successful POST (comment, form, admin save) may change any page: ban the host.
    if (bereq.method == "POST" && beresp.status < 400) {
        std.ban("req.http.host == " + bereq.http.host);
    }

    if (bereq.uncacheable) {
        return (deliver);
    }

    # The origin says "do not cache" (nocache_headers() pages, private content).
    if (beresp.http.Cache-Control ~ "(no-cache|no-store|private)") {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }

    # The request carried no session cookie: a cookie set on the way back is not
    # specific to this visitor and would only prevent caching.
    unset beresp.http.Set-Cookie;

    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = 1h;
    }
    set beresp.grace = 1h;

    # Store text compressed; clients without gzip get it gunzipped on delivery.
    if (beresp.http.Content-Type ~ "^(text/|application/(javascript|json|xml|rss\+xml|atom\+xml))" && !beresp.http.Content-Encoding) {
        set beresp.do_gzip = true;
    }

    return (deliver);
}

sub vcl_deliver {
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } elsif (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    return (deliver);
}
