# tests/real/mta/nginx.sh - nginx, serving the MTA-STS policies of the test zones.
# Sourced by tests/real/mta.sh, whose header defines the variables used here.
# shellcheck shell=bash

# nginx serves the MTA-STS policies of the test zone on 127.0.0.1:$MTA_STS_PORT with the
# server certificate (whose names include every mta-sts.*.mail.test), one server block per
# policy case (see write_zone).
write_nginx_config() {
    mkdir -p "$NGINX_DIR"
    printf 'version: STSv1\r\nmode: enforce\r\nmx: mx1.mail.test\r\nmax_age: 604800\r\n%s' \
        "$(head -c 70000 /dev/zero | tr '\0' '#')" >"$NGINX_DIR/big.txt"
    local block
    {
        printf 'pid %s/nginx.pid;\nerror_log %s/nginx-error.log;\nworker_processes 1;\nevents { worker_connections 64; }\nhttp {\n' \
            "$NGINX_DIR" "$LOG_DIR"
        printf '  access_log %s/nginx-access.log;\n  client_body_temp_path %s/tmp;\n  proxy_temp_path %s/tmp;\n  fastcgi_temp_path %s/tmp;\n  uwsgi_temp_path %s/tmp;\n  scgi_temp_path %s/tmp;\n' \
            "$LOG_DIR" "$NGINX_DIR" "$NGINX_DIR" "$NGINX_DIR" "$NGINX_DIR" "$NGINX_DIR"
        printf '  ssl_certificate %s/server.pem;\n  ssl_certificate_key %s/server.key;\n' "$PKI_DIR" "$PKI_DIR"
        for block in \
            'two|default_type text/plain; return 200 "version: STSv1\r\nmode: enforce\r\nmx: mx1.mail.test\r\nmx: mx2.mail.test\r\nmax_age: 604800\r\n";' \
            'sts-missing|default_type text/plain; return 200 "version: STSv1\r\nmode: enforce\r\nmx: other.mail.test\r\nmax_age: 604800\r\n";' \
            'sts-testing|default_type text/plain; return 200 "version: STSv1\r\nmode: testing\r\nmx: *.mail.test\r\nmax_age: 86400\r\n";' \
            'sts-404|return 404;' \
            'sts-redirect|return 301 https://mta-sts.two.mail.test/.well-known/mta-sts.txt;' \
            "sts-big|default_type text/plain; alias $NGINX_DIR/big.txt;" \
            'sts-ctype|default_type text/html; return 200 "version: STSv1\r\nmode: enforce\r\nmx: mx1.mail.test\r\nmax_age: 604800\r\n";'; do
            printf '  server {\n    listen 127.0.0.1:%s ssl;\n    server_name mta-sts.%s.mail.test;\n    location = /.well-known/mta-sts.txt { %s }\n  }\n' \
                "$MTA_STS_PORT" "${block%%|*}" "${block#*|}"
        done
        printf '}\n'
    } >"$NGINX_CONF"
    mkdir -p "$NGINX_DIR/tmp"
}

stop_nginx() {
    local pid
    pid=$(live_pid "$NGINX_DIR/nginx.pid" nginx) || return 0
    stop_session nginx "$pid" kill -TERM "$pid"
}

start_nginx() {
    nginx -c "$NGINX_CONF" -t >>"$LOG_DIR/nginx-error.log" 2>&1 || fail_start "nginx -t failed"
    nginx -c "$NGINX_CONF" </dev/null >>"$LOG_DIR/nginx-error.log" 2>&1 9>&- || fail_start "nginx failed to start"
}
