"""The test bed itself answers: Kamailio replies 200 to a sipp OPTIONS probe."""

from __future__ import annotations

import subprocess

import pytest

from tests.testbed_fixture import Testbed, sipp_command

pytestmark = pytest.mark.integration


def test_kamailio_answers_options(kamailio: Testbed, tmp_path) -> None:
    cmd = sipp_command(
        kamailio,
        "options_probe.xml",
        f"127.0.0.1:{kamailio.sip_port}",
        "-m",
        "1",
        local_port=kamailio.uac_port(1),
    )
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + kamailio.log_tail()
