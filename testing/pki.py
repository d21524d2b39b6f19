"""Certificates for TLS tests, made with the ``openssl`` command (Debian: openssl; Open vSwitch
depends on it): a CA, and a controller and a switch certificate signed by it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def make_pki(d: Path, name: str = "ca", days: int = 2) -> dict:
    """{"ca": CA certificate, "controller": (cert, key), "switch": (cert, key)} under ``d``."""
    def run(*args):
        r = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=d)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args[:2])}: {r.stderr.strip()}")
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days), "-subj", f"/CN=test {name}",
        "-keyout", f"{name}-key.pem", "-out", f"{name}-cert.pem")
    out = {"ca": d / f"{name}-cert.pem"}
    for who in ("controller", "switch"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name} {who}", "-keyout", f"{who}-key.pem",
            "-out", f"{who}.csr")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", f"{name}-cert.pem", "-CAkey", f"{name}-key.pem",
            "-CAcreateserial", "-days", str(days), "-out", f"{who}-cert.pem")
        out[who] = (d / f"{who}-cert.pem", d / f"{who}-key.pem")
    return out


def client_context(ca: Path, cert_key: tuple | None) -> ssl.SSLContext:
    """A switch's TLS context: trusts ``ca``, presents ``cert_key`` (None: no certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    if cert_key is not None:
        ctx.load_cert_chain(*cert_key)
    return ctx
