vcl 4.1;

# Varnish behind a TLS terminator (benches/tls.sh): the WordPress VCL of
# benches/run.sh (wordpress.vcl, included unchanged), plus one line run first:
# every request reached this Varnish over HTTPS, so the origin is told so, as
# strata-proxy and nginx tell it (WordPress then builds https:// links, and the
# page is the same bytes through every server).

sub vcl_recv {
    set req.http.X-Forwarded-Proto = "https";
}

include "./wordpress.vcl";
