"""The local cluster's certificates: one CA signs the API server's serving certificate, the
admin's and the API server's kubelet client certificate, and the real node's client and
serving certificates. Fresh on every ``up``."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_CIDR = "10.96.0.0/16"
# The API server's identity towards the kubelet (bound to system:kubelet-api-admin).
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path


def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(pki_dir: Path) -> Pki:
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=pki_dir / "ca.crt",
        ca_key=pki_dir / "ca.key",
        apiserver_cert=pki_dir / "apiserver.crt",
        apiserver_key=pki_dir / "apiserver.key",
        admin_cert=pki_dir / "admin.crt",
        admin_key=pki_dir / "admin.key",
        sa_key=pki_dir / "sa.key",
        sa_pub=pki_dir / "sa.pub",
        kubelet_client_cert=pki_dir / "apiserver-kubelet-client.crt",
        kubelet_client_key=pki_dir / "apiserver-kubelet-client.key",
    )
    pem = serialization.Encoding.PEM

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localkube-ca")])
    ca_cert = cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    pki.ca_key.write_bytes(pem_key(ca_key))
    pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))

    service_ip = ipaddress.IPv4Network(SERVICE_CIDR).network_address + 1  # 10.96.0.1
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(service_ip),
    ]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        server_key,
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=sans,
    )
    pki.apiserver_key.write_bytes(pem_key(server_key))
    pki.apiserver_cert.write_bytes(server_cert.public_bytes(pem))

    _client_cert(pki.admin_cert, pki.admin_key, "admin", "system:masters", ca_name, ca_key)
    # No group: what it may do on the kubelet comes from one ClusterRoleBinding (the
    # launcher binds it to system:kubelet-api-admin), as kubeadm's does.
    _client_cert(
        pki.kubelet_client_cert, pki.kubelet_client_key, KUBELET_CLIENT_USER, None, ca_name, ca_key
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki.sa_key.write_bytes(pem_key(sa_key))
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for path in (pki.ca_key, pki.apiserver_key, pki.sa_key):
        path.chmod(0o600)
    return pki


def _client_cert(
    cert_path: Path,
    key_path: Path,
    user: str,
    group: str | None,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: list[x509.GeneralName] | None = None,
    server: bool = False,
) -> None:
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group)] if group else []
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    signed = cert(
        x509.Name([*names, x509.NameAttribute(NameOID.COMMON_NAME, user)]),
        key,
        ca_name,
        ca_key,
        usages=usages,
        sans=sans,
    )
    key_path.write_bytes(pem_key(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(signed.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class NodePki:
    """The real node's certificates: its client identity towards the API server, and the
    serving certificate of its kubelet (the API server checks it against the cluster CA)."""

    client_cert: Path
    client_key: Path
    serving_cert: Path
    serving_key: Path


def write_node_pki(pki: Pki, cert_dir: Path, node_name: str, address: str) -> NodePki:
    """Certificates for node_name, signed by the cluster CA: the client one with
    O=system:nodes, CN=system:node:<name> (what the Node authorizer and NodeRestriction know a
    kubelet by), the serving one for its name, 127.0.0.1 and `address` (where it listens)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    node = NodePki(
        client_cert=cert_dir / "kubelet-client.crt",
        client_key=cert_dir / "kubelet-client.key",
        serving_cert=cert_dir / "kubelet.crt",
        serving_key=cert_dir / "kubelet.key",
    )
    user = f"system:node:{node_name}"
    _client_cert(node.client_cert, node.client_key, user, "system:nodes", ca_cert.subject, ca_key)
    sans: list[x509.GeneralName] = [
        x509.DNSName(node_name),
        *[x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(("127.0.0.1", address))],
    ]
    _client_cert(
        node.serving_cert,
        node.serving_key,
        user,
        "system:nodes",
        ca_cert.subject,
        ca_key,
        sans=sans,
        server=True,
    )
    return node


def user_kubeconfig(server: str, ca_cert: Path, cert_path: Path, key_path: Path) -> str:
    """A kubeconfig that authenticates with a client certificate (by file)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "localkube",
                "cluster": {"server": server, "certificate-authority": str(ca_cert)},
            }
        ],
        "users": [
            {
                "name": "user",
                "user": {"client-certificate": str(cert_path), "client-key": str(key_path)},
            }
        ],
        "contexts": [{"name": "localkube", "context": {"cluster": "localkube", "user": "user"}}],
        "current-context": "localkube",
    }
    return yaml.safe_dump(config, sort_keys=False)


def admin_kubeconfig(pki: Pki, port: int) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "localkube",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": b64(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "localkube", "context": {"cluster": "localkube", "user": "admin"}}],
        "current-context": "localkube",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)
