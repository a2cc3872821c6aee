"""Signing keys for C2PA manifests: where they come from, what they must be, and ``lida keys``.

A *keys folder* (what ``lida keys init DIR`` writes) holds:

* ``root-ca.pem``: the development root CA certificate, the trust anchor to hand to verifiers
  (``lida verify --trust-anchor DIR/root-ca.pem``);
* ``root-ca.key``: its private key (mode 0600), only needed to issue a new signing certificate;
* ``signer-chain.pem``: the signing certificate followed by the root (the chain c2pa embeds);
* ``signer.key``: the signing private key (mode 0600);
* ``lida-keys.json``: ``{"chain", "key", "alg", "tsa_url", "trust_anchor"}``, paths relative to the folder.

Where the signing configuration is looked up, first hit wins: ``--keys PATH``, ``$LIDA_KEYS``,
then ``<user config dir>/lida/keys``. ``PATH`` is a keys folder or a JSON config file with the
same fields (relative paths are relative to the file). The certificate is checked before any
asset is touched (:func:`load_signing_config`): present, parseable, an end entity (not a CA),
digitalSignature key usage, the emailProtection extended key usage c2pa-rs requires, inside its
validity period, matching the private key and the algorithm; then a one-pixel test signature.

Certificates from ``lida keys init`` are for development and closed deployments: public viewers
(contentcredentials.org/verify, ...) show them as *untrusted* because the root is not on the C2PA
trust list. A production deployment uses a certificate from a CA on that list.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from . import hookimpl
from .cli_options import at_least_one
from .errors import LidaError

log = logging.getLogger(__name__)

CONFIG_NAME = "lida-keys.json"
ROOT_CERT, ROOT_KEY = "root-ca.pem", "root-ca.key"
CHAIN, KEY = "signer-chain.pem", "signer.key"
ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
EKU_EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4"
EXPIRY_WARNING_DAYS = 30


class KeysError(LidaError):
    """Signing keys are missing, unreadable, expired or not acceptable to C2PA."""


@dataclass(frozen=True)
class SigningConfig:
    """A checked signing configuration (PEM bytes and where they came from)."""

    chain_pem: bytes
    key_pem: bytes
    alg: str
    tsa_url: str | None
    source: str
    chain_path: Path
    trust_anchor: Path | None = None
    not_after: str | None = None
    subject: str | None = None


# -- lookup --------------------------------------------------------------------------------
def default_keys_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("lida")) / "keys"


def resolve_keys_path(keys: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """``(path, origin)``: ``keys``, else ``$LIDA_KEYS``, else the per-user default folder."""
    if keys:
        return Path(keys).expanduser(), "--keys"
    if os.environ.get("LIDA_KEYS"):
        return Path(os.environ["LIDA_KEYS"]).expanduser(), "$LIDA_KEYS"
    return default_keys_dir(), "default keys folder"


def _read_config(path: Path, origin: str) -> tuple[dict, Path]:
    """The config dict and the folder its relative paths are relative to."""
    if path.is_dir():
        cfg_file = path / CONFIG_NAME
        if cfg_file.is_file():
            path = cfg_file
        else:  # a folder with the default file names and no config file
            return {"chain": CHAIN, "key": KEY, "alg": "es256"}, path
    if not path.exists():
        hint = "" if origin != "default keys folder" else " (create keys with `lida keys init DIR` and pass --keys DIR)"
        raise KeysError(f"signing keys not found: {path} ({origin}) does not exist{hint}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeysError(f"{path}: cannot read the signing config: {exc}") from None
    if not isinstance(cfg, dict):
        raise KeysError(f"{path}: the signing config must be a JSON object")
    return cfg, path.parent


def _read_file(base: Path, name: object, what: str) -> tuple[Path, bytes]:
    if not isinstance(name, str) or not name:
        raise KeysError(f"signing config: {what!r} must name a file")
    p = (base / name).expanduser()
    try:
        return p, p.read_bytes()
    except FileNotFoundError:
        raise KeysError(f"{p}: {what} file not found") from None
    except OSError as exc:
        raise KeysError(f"{p}: cannot read the {what} file: {exc.strerror or exc}") from None


# -- checks --------------------------------------------------------------------------------
def _alg_for_key(key) -> set[str]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": {"es256"}, "secp384r1": {"es384"}, "secp521r1": {"es512"}}.get(key.curve.name, set())
    if isinstance(key, rsa.RSAPublicKey):
        return {"ps256", "ps384", "ps512"}
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"ed25519"}
    return set()


def check_certificate(
    chain_pem: bytes, key_pem: bytes, alg: str, where: str, now: dt.datetime | None = None, key_where: str | None = None
) -> dict:
    """Raise :class:`KeysError` unless the chain's first certificate can sign C2PA manifests with this key;
    ``where`` names the chain in messages, ``key_where`` the key file (default: ``where``)."""
    key_where = key_where or where
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise KeysError(f"{where}: not a PEM certificate chain ({exc})") from None
    cert = certs[0]
    subject = cert.subject.rfc4514_string()
    try:
        bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        if bc.ca:
            raise KeysError(f"{where}: {subject} is a CA certificate; C2PA needs an end-entity signing certificate")
    except x509.ExtensionNotFound:
        pass
    if cert.issuer == cert.subject:
        raise KeysError(f"{where}: {subject} is self-signed; C2PA needs a certificate issued by a CA (lida keys init)")
    try:
        ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        if not ku.digital_signature:
            raise KeysError(f"{where}: {subject} lacks the digitalSignature key usage")
    except x509.ExtensionNotFound:
        raise KeysError(f"{where}: {subject} has no key usage extension (digitalSignature is required)") from None
    try:
        eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
        ekus = {o.dotted_string for o in eku}
    except x509.ExtensionNotFound:
        ekus = set()
    if EKU_EMAIL_PROTECTION not in ekus:
        raise KeysError(
            f"{where}: {subject} lacks the emailProtection extended key usage"
            f" ({EKU_EMAIL_PROTECTION}) that c2pa requires"
        )
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < nb:
        raise KeysError(f"{where}: {subject} is not valid before {nb.isoformat()}")
    if now > na:
        raise KeysError(f"{where}: {subject} expired on {na.isoformat()} (renew it: lida keys init NEWDIR)")
    if (na - now).days < EXPIRY_WARNING_DAYS:
        log.warning("%s: signing certificate expires on %s", where, na.isoformat())
    _check_key(cert, key_pem, key_where, f"{subject} ({where})")
    ok_algs = _alg_for_key(cert.public_key())
    if alg not in ok_algs:
        raise KeysError(f"{where}: algorithm {alg!r} does not fit this key (use one of {sorted(ok_algs) or 'none'})")
    return {"subject": subject, "not_after": na.isoformat()}


def _check_key(cert, key_pem: bytes, key_where: str, cert_name: str) -> None:
    """:class:`KeysError` naming ``key_where`` unless ``key_pem`` is an unencrypted PEM key of ``cert``."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeysError(
            f"{key_where}: the private key cannot be read ({exc}); an unencrypted PEM key is needed"
        ) from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, pub) != cert.public_key().public_bytes(der, pub):
        raise KeysError(f"{key_where}: the private key does not belong to the certificate {cert_name}")


def load_signing_config(keys: str | os.PathLike[str] | None = None, *, test_sign: bool = True) -> SigningConfig:
    """Find, read and check the signing configuration; raise :class:`KeysError` with the reason."""
    path, origin = resolve_keys_path(keys)
    cfg, base = _read_config(path, origin)
    alg = str(cfg.get("alg", "es256")).lower()
    if alg not in ALGORITHMS:
        raise KeysError(f"{path}: unknown signing algorithm {alg!r} (one of {', '.join(ALGORITHMS)})")
    chain_path, chain = _read_file(base, cfg.get("chain", CHAIN), "certificate chain")
    key_path, key = _read_file(base, cfg.get("key", KEY), "private key")
    tsa = cfg.get("tsa_url") or None
    if tsa is not None and not str(tsa).startswith(("http://", "https://")):
        raise KeysError(f"{path}: tsa_url must be an http(s) URL, got {tsa!r}")
    info = check_certificate(chain, key, alg, str(chain_path), key_where=str(key_path))
    anchor = cfg.get("trust_anchor", ROOT_CERT if (base / ROOT_CERT).is_file() else None)
    config = SigningConfig(
        chain_pem=chain,
        key_pem=key,
        alg=alg,
        tsa_url=tsa,
        source=f"{path} ({origin})",
        chain_path=chain_path,
        trust_anchor=(base / anchor) if anchor else None,
        not_after=info["not_after"],
        subject=info["subject"],
    )
    if test_sign:
        test_signature(config)
    return config


def make_signer(config: SigningConfig):
    """A c2pa ``Signer`` (thread-safe to share across Builders)."""
    import c2pa

    try:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(config.alg, config.chain_pem, config.key_pem, config.tsa_url))
    except c2pa.C2paError as exc:
        raise KeysError(f"{config.chain_path}: c2pa refuses the signing credentials: {exc}") from None


def test_signature(config: SigningConfig) -> None:
    """Sign a tiny in-memory PNG, so that c2pa's own checks (and a TSA) fail before any real asset is touched."""
    import c2pa
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    buf.seek(0)
    signer = make_signer(config)
    ctx = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    try:
        manifest = {
            "claim_generator_info": [{"name": "lida-plugin keys check"}],
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created",
                 "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCreation"}]}}],
        }  # fmt: skip
        with c2pa.Builder(manifest, context=ctx) as b:
            b.sign(signer, "image/png", buf, io.BytesIO())
    except c2pa.C2paError as exc:
        raise KeysError(f"{config.chain_path}: a test signature failed: {exc}") from None
    finally:
        signer.close()
        ctx.close()


# -- lida keys init ------------------------------------------------------------------------
def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a new file with exactly ``mode`` (0600 for private keys, 0644 for certificates and the
    config), whatever the umask: set on the open descriptor before any byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def init_keys(
    dest: str | os.PathLike[str], *, org: str = "LIDA development", days: int = 825, force: bool = False
) -> Path:
    """Create a development root CA and an ES256 end-entity signing certificate in ``dest``."""
    from cryptography.hazmat.primitives import serialization

    if days < 1:
        raise KeysError(f"days must be >= 1, got {days}")

    d = _keys_folder(Path(dest).expanduser(), force)
    ca, ca_key, ee, ee_key = _development_chain(org, days)
    pem = serialization.Encoding.PEM
    pkcs8, nopw = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    _write_private(d / ROOT_CERT, ca.public_bytes(pem), 0o644)
    _write_private(d / ROOT_KEY, ca_key.private_bytes(pem, pkcs8, nopw))
    _write_private(d / CHAIN, ee.public_bytes(pem) + ca.public_bytes(pem), 0o644)
    _write_private(d / KEY, ee_key.private_bytes(pem, pkcs8, nopw))
    cfg = {"chain": CHAIN, "key": KEY, "alg": "es256", "tsa_url": None, "trust_anchor": ROOT_CERT}
    _write_private(d / CONFIG_NAME, (json.dumps(cfg, indent=2) + "\n").encode(), 0o644)
    return d


def _keys_folder(d: Path, force: bool) -> Path:
    """``d`` made ready for new keys: created private (0700, whatever the umask), earlier keys removed
    with ``force``; refused when it holds keys (without ``force``) or others can write to it."""
    names = [ROOT_CERT, ROOT_KEY, CHAIN, KEY, CONFIG_NAME]
    existing = [n for n in names if (d / n).exists()]
    if existing and not force:
        raise KeysError(f"{d}: already holds {', '.join(existing)} (choose another folder, or --force to replace)")
    if d.is_dir() and d.stat().st_mode & 0o022:  # anyone else who can write here could swap the chain
        raise KeysError(
            f"{d}: the folder is writable by others (mode {d.stat().st_mode & 0o777:o}); choose a private folder"
            f" or `chmod go-w {d}` first"
        )
    try:
        if not d.is_dir():
            d.parent.mkdir(parents=True, exist_ok=True)
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)  # whatever the umask
        for n in existing:
            (d / n).unlink()
    except OSError as exc:
        raise KeysError(f"{d}: cannot create the keys folder: {exc.strerror or exc}") from None

    return d


def _development_chain(org: str, days: int):
    """``(ca_cert, ca_key, signer_cert, signer_key)``: a P-256 root CA and an end-entity signing certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
        )

    def key_usage(sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
        )  # fmt: skip

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(f"{org} root CA"))
        .issuer_name(name(f"{org} root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days * 4))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(False, True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ee_key = ec.generate_private_key(ec.SECP256R1())
    ee = (
        x509.CertificateBuilder()
        .subject_name(name(f"{org} signer"))
        .issuer_name(ca.subject)
        .public_key(ee_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(True, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ee_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, ca_key, ee, ee_key


UNTRUSTED_NOTE = (
    "These are development certificates. Manifests signed with them verify as Valid but show as "
    "UNTRUSTED in public viewers (e.g. contentcredentials.org/verify), because this root is not on the "
    "C2PA trust list. Hand {anchor} to your own verifiers (lida verify --trust-anchor {anchor}); "
    "use a certificate from a listed CA for public distribution. Keep {key} and {cakey} secret."
)


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_cmd == "init":
        d = init_keys(args.dir, org=args.org, days=args.days, force=args.force)
        config = load_signing_config(d)
        print(f"wrote signing keys to {d}:")
        for n, what in ((ROOT_CERT, "trust anchor (root CA certificate)"), (CHAIN, "signing certificate chain"),
                        (KEY, "signing key, mode 0600"), (ROOT_KEY, "root CA key, mode 0600"),
                        (CONFIG_NAME, "config for --keys / $LIDA_KEYS")):  # fmt: skip
            print(f"  {d / n}\t{what}")
        print(f"signing certificate {config.subject}, valid until {config.not_after}")
        print(UNTRUSTED_NOTE.format(anchor=d / ROOT_CERT, key=d / KEY, cakey=d / ROOT_KEY))
        return 0
    if args.keys_cmd == "check":
        config = load_signing_config(args.keys)
        anchor = str(config.trust_anchor) if config.trust_anchor else None
        out = {"source": config.source, "subject": config.subject, "not_after": config.not_after, "alg": config.alg,
               "tsa_url": config.tsa_url, "trust_anchor": anchor}  # fmt: skip
        print(json.dumps(out, indent=2))
        return 0
    raise AssertionError(args.keys_cmd)


@hookimpl
def lida_register_commands(subparsers: argparse._SubParsersAction, pm) -> None:
    sub = subparsers
    p = sub.add_parser("keys", help="create and check C2PA signing keys",
                       description="Create and check the keys that sign C2PA manifests.")  # fmt: skip
    ks = p.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    s = ks.add_parser("init", help="create a development root CA and signing certificate in DIR",
                      description="Create a development root CA (root-ca.pem) and an end-entity signing certificate. "
                      "They verify as Valid but show as untrusted in public viewers.")  # fmt: skip
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--org", default="LIDA development", help="organisation name in the certificates")
    s.add_argument(
        "--days",
        type=at_least_one("--days"),
        default=825,
        help="validity of the signing certificate in days (default 825)",
    )
    s.add_argument("--force", action="store_true", help="replace keys already in DIR")
    s = ks.add_parser("check", help="check the signing configuration (--keys, $LIDA_KEYS or the default folder)")
    s.add_argument("--keys", metavar="PATH", help="keys folder or JSON config file")
    p.set_defaults(func=cmd_keys)
