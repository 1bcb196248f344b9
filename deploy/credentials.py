"""TLS certificates and SuperNode keys for a secured local federation, made with ``cryptography``.

Chapter: "From simulation to deployment". What Flower 1.42 needs for a secured deployment:

- **TLS**: a certificate authority (CA) and a server certificate it signed for the address
  the SuperNodes and the ``flwr`` command line use (here 127.0.0.1 and localhost, in the
  certificate's *subjectAltName*). The SuperLink gets ``--ssl-ca-certfile``, ``--ssl-certfile``
  and ``--ssl-keyfile``; every client of it (SuperNodes: ``--root-certificates``; the ``flwr``
  connection: ``root-certificates``) checks the server's identity against the CA.
- **SuperNode authentication**: one EC key pair per SuperNode (NIST P-384, OpenSSH format, as
  ``ssh-keygen -t ecdsa -b 384`` makes it). The public key is registered with
  ``flwr supernode register``; the SuperNode signs its requests with the private key
  (``--auth-supernode-private-key``), and a SuperLink started with ``--enable-supernode-auth``
  turns away every node whose key it does not know.

The CA's private key stays in the launch folder and is used only to sign the server
certificate; on real machines it belongs on none of the servers (see the chapter).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate, the SuperLink's certificate and its private key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    path.chmod(0o600)  # a private key readable by others is no secret


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedtl local federation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
             days: int = 7) -> TlsFiles:
    """A CA and a server certificate for ``hosts`` (IP addresses or DNS names), in ``folder``.

    Parameters
    ----------
    folder
        Created if missing; receives ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``.
    hosts
        Names the SuperLink is reached by; each goes into the certificate's subjectAltName.
    days
        Validity of both certificates (a rehearsal needs no long-lived ones).

    Raises
    ------
    ValueError
        ``hosts`` is empty or ``days`` < 1.
    """
    if not hosts:
        raise ValueError("hosts=() is invalid: allowed one or more IP addresses or DNS names")
    if days < 1:
        raise ValueError(f"days={days} is invalid: allowed an integer >= 1")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("fedtl CA")).issuer_name(_name("fedtl CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA384()))

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
                   .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA384()))

    files = TlsFiles(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(folder / "ca.key", ca_key, serialization.PrivateFormat.PKCS8)
    _write_key(files.server_key, server_key, serialization.PrivateFormat.PKCS8)
    return files


def make_node_key(path: str | Path) -> tuple[Path, Path]:
    """A SuperNode's key pair: ``path`` (private, OpenSSH) and ``path.pub`` (public, OpenSSH)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    _write_key(path, key, serialization.PrivateFormat.OpenSSH)
    public = path.with_name(path.name + ".pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return path, public
