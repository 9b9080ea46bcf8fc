"""Discovery speed: 500 nginx and 500 Apache vhost files, against the 100 ms target.

    .venv/bin/python bench/fqdn_discovery.py [--vhosts 500] [--runs 7]

Generates Debian-style trees in a temp dir (each vhost: a server block / VirtualHost
with two names, a wildcard, TLS lines, locations and an include of a shared
snippet), then times discovery, best of several runs. The baseline is reading the
same files raw (open + read, no parsing), measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.fqdn import apache, nginx

TARGET_MS = 100.0

NGINX_VHOST = """\
# {i}: generated vhost
server {{
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name site{i}.example.com www.site{i}.example.com *.cdn{i}.example.com;
    ssl_certificate     /etc/ssl/site{i}/fullchain.pem;
    ssl_certificate_key /etc/ssl/site{i}/privkey.pem;
    include snippets/ssl-params.conf;
    root /var/www/site{i};
    index index.html;
    access_log /var/log/nginx/site{i}.access.log;
    location / {{
        try_files $uri $uri/ =404;
    }}
    location ~ \\.php$ {{
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:/run/php/php-fpm.sock;
    }}
    location /static/ {{
        expires 30d;
        add_header Cache-Control "public";
    }}
}}
"""

APACHE_VHOST = """\
# {i}: generated vhost
<VirtualHost *:443>
    ServerName site{i}.example.com
    ServerAlias www.site{i}.example.com *.cdn{i}.example.com
    ServerAdmin webmaster@site{i}.example.com
    DocumentRoot /var/www/site{i}
    SSLEngine on
    SSLCertificateFile /etc/ssl/site{i}/fullchain.pem
    SSLCertificateKeyFile /etc/ssl/site{i}/privkey.pem
    Include conf-available/ssl-params.conf
    ErrorLog ${{APACHE_LOG_DIR}}/site{i}-error.log
    CustomLog ${{APACHE_LOG_DIR}}/site{i}-access.log combined
    <Directory /var/www/site{i}>
        Options -Indexes +FollowSymLinks
        AllowOverride All
        Require all granted
    </Directory>
    <FilesMatch "\\.(php)$">
        SetHandler "proxy:unix:/run/php/php-fpm.sock|fcgi://localhost"
    </FilesMatch>
</VirtualHost>
"""


def make_trees(root: Path, vhosts: int) -> tuple[Path, Path]:
    ng = root / "nginx"
    (ng / "sites-enabled").mkdir(parents=True)
    (ng / "snippets").mkdir()
    (ng / "conf.d").mkdir()
    (ng / "nginx.conf").write_text(
        "user www-data;\nevents { worker_connections 768; }\n"
        "http {\n    include conf.d/*.conf;\n    include sites-enabled/*;\n}\n"
    )
    (ng / "snippets" / "ssl-params.conf").write_text(
        "ssl_protocols TLSv1.2 TLSv1.3;\nssl_prefer_server_ciphers off;\n"
    )
    (ng / "snippets" / "fastcgi-php.conf").write_text(
        "fastcgi_split_path_info ^(.+?\\.php)(/.*)$;\nfastcgi_index index.php;\n"
    )
    ap = root / "apache2"
    (ap / "sites-enabled").mkdir(parents=True)
    (ap / "conf-available").mkdir()
    (ap / "apache2.conf").write_text(
        "Timeout 300\nInclude ports.conf\nIncludeOptional sites-enabled/*.conf\n"
    )
    (ap / "ports.conf").write_text("Listen 80\nListen 443\n")
    (ap / "conf-available" / "ssl-params.conf").write_text(
        "SSLProtocol -all +TLSv1.2 +TLSv1.3\nSSLHonorCipherOrder off\n"
    )
    for i in range(vhosts):
        (ng / "sites-enabled" / f"site{i:04d}.conf").write_text(NGINX_VHOST.format(i=i))
        (ap / "sites-enabled" / f"site{i:04d}.conf").write_text(APACHE_VHOST.format(i=i))
    return ng / "nginx.conf", ap


def best_ms(fn: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def raw_read(files: list[Path]) -> None:
    for f in files:
        f.read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vhosts", type=int, default=500)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nginx_conf, apache_root = make_trees(Path(tmp), args.vhosts)
        ng = nginx.discover(nginx_conf)
        ac = apache.discover([apache_root])
        assert len(ng.found) == 2 * args.vhosts and not ng.problems, ng.problems[:3]
        assert len(ac.found) == 2 * args.vhosts and not ac.problems, ac.problems[:3]
        rows = [
            ("nginx", ng.files, lambda: nginx.discover(nginx_conf)),
            ("apache", ac.files, lambda: apache.discover([apache_root])),
        ]
        print(f"fqdn discovery, {args.vhosts} vhost files per server, best of {args.runs} runs")
        total = 0.0
        for label, files, fn in rows:
            baseline = best_ms(lambda files=files: raw_read([Path(f) for f in files]), args.runs)
            ms = best_ms(fn, args.runs)
            total += ms
            verdict = "OK" if ms < TARGET_MS else "OVER"
            print(
                f"  {label:<7} {len(files):>4} files read, {2 * args.vhosts} names: "
                f"{ms:7.1f} ms  (target {TARGET_MS:.0f} ms: {verdict}; "
                f"raw read of the same files {baseline:.1f} ms, x{ms / baseline:.1f})"
            )
        print(f"  both    {total:7.1f} ms for {2 * args.vhosts} vhost files")


if __name__ == "__main__":
    main()
