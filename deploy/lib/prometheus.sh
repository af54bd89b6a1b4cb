# shellcheck shell=bash
# Prometheus and promtool (Debian's prometheus package), for the operations tests:
# `promtool check metrics` on a live scrape, `promtool check rules` on the alert rules,
# and a real Prometheus server scraping a worker. Never started here: tests start
# their own on free loopback ports. Needs lib/common.sh sourced first.

# Installs prometheus and promtool unless both are on PATH.
prometheus_install() {
    if have prometheus && have promtool; then
        say "prometheus already installed: $(command -v prometheus), $(command -v promtool)"
        return 0
    fi
    apt_install "the operations tests (prometheus, promtool)" prometheus
    # Debian's package enables a system service; tests run their own server instead.
    if have systemctl && systemctl is-active --quiet prometheus 2>/dev/null; then
        note "the prometheus system service is running; the tests do not use it"
    fi
    have promtool || die "prometheus installed but promtool is not on PATH"
}
