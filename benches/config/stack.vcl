vcl 4.1;

# Varnish for the full-stack benchmark (benches/stack.sh): the usual WordPress VCL of
# benches/config/wordpress.vcl (same pass rules, cookies stripped, 1h TTL and grace, text
# stored gzipped), one node of N in front of the same origin. Comments go to PHP.
#
# Invalidation, as a classic Varnish cluster does it:
# - a successful POST passed through this node bans this node's objects of the host (every
#   page of the demo site shows the "Recent Comments" block, so a comment changes them all);
# - a BAN request from the WordPress host (the purge mu-plugin stack.sh installs during the
#   Varnish phase sends one to every node on `comment_post`) does the same on each node,
#   which is how the other nodes learn about the comment.

import std;

backend wordpress {
    .host = "127.0.0.1";
    .port = "8081";
    .connect_timeout = 2s;
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 10s;
}

# Who may send BAN: the WordPress host (loopback here; stack.sh adds the host's address on
# the director rig's bridge when the nodes sit in their own network namespaces).
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    # The health check of strata-director (its health_url) when the nodes sit behind it.
    if (req.url == "/healthz") {
        return (synth(200, "OK"));
    }

    if (req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(405, "BAN not allowed from " + client.ip));
        }
        # X-Ban-Host names the site (the Host of a request to a node's own address is that
        # address); without it, the request's Host.
        if (req.http.X-Ban-Host) {
            ban("req.http.host == " + req.http.X-Ban-Host);
        } else {
            ban("req.http.host == " + req.http.host);
        }
        return (synth(200, "Banned"));
    }

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

    unset req.http.Cookie;

    return (hash);
}

sub vcl_backend_response {
    # A successful POST (a comment) changed pages of this host: ban them on this node.
    if (bereq.method == "POST" && beresp.status < 400) {
        std.ban("req.http.host == " + bereq.http.host);
    }

    if (bereq.uncacheable) {
        return (deliver);
    }

    if (beresp.http.Cache-Control ~ "(no-cache|no-store|private)") {
        set beresp.ttl = 120s;
        set beresp.uncacheable = true;
        return (deliver);
    }

    unset beresp.http.Set-Cookie;

    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = 1h;
    }
    set beresp.grace = 1h;

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
