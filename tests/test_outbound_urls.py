"""Outbound URLs (issue 16's webhooks): no server-side request forgery into the server's own
network, however the address is spelled; a setting lets the tests' loopback receivers through."""

import pytest

from autoglm_site.outbound import OutboundURLError, check_outbound_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/hook",  # and in hexadecimal, shortened
        "http://224.0.0.1/hook",  # multicast
        "http://100.64.0.1/hook",  # carrier-grade NAT, not public
    ],
)
def test_it_refuses_private_loopback_and_link_local_addresses(url, settings):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = False
    with pytest.raises(OutboundURLError, match="public addresses only"):
        check_outbound_url(url)


@pytest.mark.parametrize(
    "url, why",
    [
        ("ftp://93.184.215.14/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("https://user:pw@93.184.215.14/hook", "user name"),
        ("http://93.184.215.14:99999/hook", "port"),
        ("http:///hook", "http or https"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_it_refuses_urls_that_are_not_plain_web_urls(url, why, settings):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = False
    with pytest.raises(OutboundURLError, match=why) as refused:
        check_outbound_url(url, param="callback_url")
    assert refused.value.code == "invalid_url" and refused.value.param == "callback_url"


def test_it_takes_a_public_address_and_says_where_to_connect(settings):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = False
    checked = check_outbound_url("https://93.184.215.14/hooks/autoglm")
    assert (checked.host, checked.port, checked.address) == ("93.184.215.14", 443, "93.184.215.14")


def test_the_setting_lets_loopback_through(settings):
    settings.AUTOGLM_OUTBOUND_ALLOW_PRIVATE = True
    assert check_outbound_url("http://127.0.0.1:9000/hook").address == "127.0.0.1"
