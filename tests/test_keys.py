"""Signing keys: `lida keys init`, the checks made before any asset is touched."""

from __future__ import annotations

import datetime as dt
import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lida_plugin.cli import EXIT_SETUP, main
from lida_plugin.keys import CHAIN, CONFIG_NAME, KEY, ROOT_CERT, ROOT_KEY, KeysError, init_keys, load_signing_config


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return init_keys(tmp_path_factory.mktemp("keys") / "k")


def test_init_writes_ca_signer_and_private_keys_0600(keys):
    for n in (ROOT_CERT, ROOT_KEY, CHAIN, KEY, CONFIG_NAME):
        assert (keys / n).is_file(), n
    for n in (KEY, ROOT_KEY):
        assert stat.S_IMODE((keys / n).stat().st_mode) == 0o600
    ee, root = x509.load_pem_x509_certificates((keys / CHAIN).read_bytes())
    assert not ee.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ee.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in ee.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root == x509.load_pem_x509_certificate((keys / ROOT_CERT).read_bytes())
    cfg = load_signing_config(keys)  # includes a test signature through c2pa
    assert cfg.alg == "es256" and cfg.trust_anchor == keys / ROOT_CERT


def test_init_refuses_to_overwrite(keys):
    with pytest.raises(KeysError, match="already holds"):
        init_keys(keys)


def test_cli_init_says_untrusted(tmp_path, capsys):
    assert main(["keys", "init", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert "UNTRUSTED" in out and "root-ca.pem" in out
    assert main(["keys", "check", "--keys", str(tmp_path / "k")]) == 0
    assert json.loads(capsys.readouterr().out)["alg"] == "es256"


def test_lookup_env_and_config_file(keys, tmp_path, monkeypatch):
    monkeypatch.setenv("LIDA_KEYS", str(keys))
    assert load_signing_config(test_sign=False).chain_path == keys / CHAIN
    cfg = tmp_path / "my-keys.json"
    cfg.write_text(json.dumps({"chain": str(keys / CHAIN), "key": str(keys / KEY), "alg": "ES256"}))
    assert load_signing_config(cfg, test_sign=False).alg == "es256"


def test_missing_keys_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("LIDA_KEYS", raising=False)
    with pytest.raises(KeysError, match="not found"):
        load_signing_config(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / CHAIN).write_text("x")
    with pytest.raises(KeysError, match="private key file not found"):
        load_signing_config(tmp_path / "half")


def _issue(keys, tmp_path, *, ca=False, eku=(ExtendedKeyUsageOID.EMAIL_PROTECTION,), days=(-1, 30), self_signed=False):
    """A signing folder with a certificate issued by ``keys``' root, with the given defects."""
    ca_cert = x509.load_pem_x509_certificate((keys / ROOT_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((keys / ROOT_KEY).read_bytes(), None)
    k = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if self_signed else ca_cert.subject)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True)
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = b.sign(k if self_signed else ca_key, hashes.SHA256())
    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    pem = serialization.Encoding.PEM
    (d / CHAIN).write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    (d / KEY).write_bytes(k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return d


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        ({"days": (-60, -1)}, "expired"),
        ({"days": (5, 60)}, "not valid before"),
        ({"ca": True}, "CA certificate"),
        ({"eku": ()}, "emailProtection"),
        ({"eku": (ExtendedKeyUsageOID.SERVER_AUTH,)}, "emailProtection"),
        ({"self_signed": True}, "self-signed"),
    ],
)
def test_wrong_certificates_are_refused(keys, tmp_path, defect, message):
    with pytest.raises(KeysError, match=message):
        load_signing_config(_issue(keys, tmp_path, **defect))


def test_key_not_matching_certificate(keys, tmp_path):
    d = _issue(keys, tmp_path)
    other = ec.generate_private_key(ec.SECP256R1())
    (d / KEY).write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(KeysError, match="does not belong"):
        load_signing_config(d)


def test_an_unreadable_key_is_named_not_the_chain(keys, tmp_path):
    d = _issue(keys, tmp_path)
    (d / KEY).write_text("garbage")
    with pytest.raises(KeysError, match=f"^{d / KEY}: the private key cannot be read"):  # named the chain before
        load_signing_config(d)


def test_wrong_algorithm_for_key(keys, tmp_path):
    cfg = tmp_path / "k.json"
    cfg.write_text(json.dumps({"chain": str(keys / CHAIN), "key": str(keys / KEY), "alg": "ps256"}))
    with pytest.raises(KeysError, match="does not fit"):
        load_signing_config(cfg)


def test_attribute_with_bad_keys_exits_3_before_touching_anything(isolated_env, images, keys, tmp_path, capsys):
    bad = _issue(keys, tmp_path, days=(-60, -1))
    out = tmp_path / "out"
    png = images["gen-a"][0]
    before = png.read_bytes()
    rc = main(["attribute", str(png), "--manifest", "embed", "--out", str(out), "--keys", str(bad)])
    assert rc == EXIT_SETUP
    assert "expired" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert png.read_bytes() == before


@pytest.mark.parametrize("days", ["0", "-5"])
def test_keys_init_refuses_days_below_one_and_writes_nothing(tmp_path, capsys, days):
    from lida_plugin.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["keys", "init", str(tmp_path / "k"), "--days", days])
    assert exc.value.code == 2 and "--days must be a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()
    with pytest.raises(KeysError, match="days must be >= 1"):
        init_keys(tmp_path / "k2", days=0)
