#!/usr/bin/env python3
"""Make a private certificate authority and mutual-TLS certificates for one dsketch cluster.

Dask's TLS (``tls://`` addresses) authenticates both ends of every connection against one
CA that you own: the scheduler and workers present a *cluster* certificate, clients
(notebooks, ``dsketch`` jobs) a *client* certificate, and everybody refuses peers whose
certificate that CA did not sign.  This script writes::

    OUT/ca.key                 the CA's private key: keep it off the cluster (mode 0600)
    OUT/ca.crt                 the CA certificate
    OUT/cluster/ca.crt         } mounted at /certs in scheduler and worker containers,
    OUT/cluster/tls.crt        } a Kubernetes Secret ``dsketch-tls-cluster``, or read from
    OUT/cluster/tls.key        } a private directory by the SLURM scripts
    OUT/client/ca.crt          } mounted at /certs in the JupyterLab and job containers,
    OUT/client/tls.crt         } a Secret ``dsketch-tls-client``, or your laptop's
    OUT/client/tls.key         } ``~/.config/dsketch/certs``

The names match what ``kubectl create secret tls`` and cert-manager produce (``ca.crt``,
``tls.crt``, ``tls.key``), so a site with its own PKI can swap these files for its own.

Usage::

    pip install cryptography
    python deployments/make_certs.py certs/ --hosts scheduler,localhost,127.0.0.1
    python deployments/make_certs.py certs/ --client alice     # one more client, same CA

Dask does not check host names (it expects "a dedicated CA for the cluster"), so
``--hosts`` only documents where the certificate is meant to be used; what protects the
cluster is that only holders of a certificate from *this* CA get in.  Certificates expire
after ``--days`` (default 365): rerun with the same OUT to issue new leaves from the
existing CA.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import ipaddress
import os
from pathlib import Path

__all__ = ["make_ca", "issue", "write_bundle", "main"]


def _x509():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise SystemExit("make_certs.py needs the 'cryptography' package: pip install cryptography "
                         f"({exc})") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _key():
    _, _, _, ec, _, _ = _x509()
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    _, _, serialization, _, _, _ = _x509()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    _, _, serialization, _, _, _ = _x509()
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(name: str = "dsketch cluster CA", days: int = 3650):
    """A self-signed CA: returns ``(key, cert)``."""
    x509, hashes, _, _, _, NameOID = _x509()
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, common_name: str, *, hosts=(), server: bool = True, days: int = 365):
    """A leaf certificate signed by the CA: returns ``(key, cert)``.

    ``server=True`` (scheduler and workers, which both listen and connect) allows server
    and client authentication; ``server=False`` (a client) only client authentication.
    """
    x509, hashes, _, _, EKU, NameOID = _x509()
    key = _key()
    now = _dt.datetime.now(_dt.timezone.utc)
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    usages = [EKU.SERVER_AUTH, EKU.CLIENT_AUTH] if server else [EKU.CLIENT_AUTH]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(now + _dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)


def write_bundle(directory, ca_cert, key, cert) -> dict[str, str]:
    """Write ``ca.crt``, ``tls.crt``, ``tls.key`` into ``directory``; return their paths."""
    d = Path(directory)
    _write(d / "ca.crt", _pem_cert(ca_cert))
    _write(d / "tls.crt", _pem_cert(cert))
    _write(d / "tls.key", _pem_key(key), private=True)
    return {"ca": str(d / "ca.crt"), "cert": str(d / "tls.crt"), "key": str(d / "tls.key")}


def _load_ca(out: Path):
    x509, _, serialization, _, _, _ = _x509()
    key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    return key, cert


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--hosts", default="scheduler,localhost,127.0.0.1",
                   help="comma-separated DNS names / IPs of the scheduler and workers "
                        "(default: %(default)s)")
    p.add_argument("--client", default="client",
                   help="name of the client certificate's directory and CN (default: %(default)s)")
    p.add_argument("--days", type=int, default=365, help="validity of leaf certificates")
    args = p.parse_args(argv)
    out: Path = args.out
    if (out / "ca.key").exists():
        ca_key, ca_cert = _load_ca(out)
        print(f"using the existing CA in {out}")
    else:
        ca_key, ca_cert = make_ca()
        _write(out / "ca.key", _pem_key(ca_key), private=True)
        _write(out / "ca.crt", _pem_cert(ca_cert))
        print(f"new CA: {out / 'ca.crt'} (keep {out / 'ca.key'} off the cluster)")
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if not (out / "cluster" / "tls.crt").exists():
        k, c = issue(ca_key, ca_cert, "dsketch-cluster", hosts=hosts, server=True, days=args.days)
        write_bundle(out / "cluster", ca_cert, k, c)
        print(f"cluster certificate: {out / 'cluster'} (hosts: {', '.join(hosts)})")
    k, c = issue(ca_key, ca_cert, f"dsketch-{args.client}", server=False, days=args.days)
    write_bundle(out / args.client, ca_cert, k, c)
    print(f"client certificate: {out / args.client}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
