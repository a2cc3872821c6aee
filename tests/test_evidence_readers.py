"""Declared-provenance readers on small files made here: each format read right, each malformed variant harmless."""

from __future__ import annotations

import json
import time
import zlib

import jsonschema
import pytest
from evidence_fixtures import (
    XMP_BOMB,
    a1111_png,
    camera_jpeg,
    comfy_png,
    insert_png_chunks,
    jpeg_with_segment,
    png_chunk,
    png_with_text,
    xmp_jpeg,
)
from provenance_helpers import REPO

from lida_plugin.evidence import read_evidence, read_evidence_bytes
from lida_plugin.evidence.names import ModelNamesError, load_names

ITEM_SCHEMA = json.loads((REPO / "lida_plugin/schemas/evidence-item.schema.json").read_text())


def check(items):
    for i in items:
        jsonschema.validate(i, ITEM_SCHEMA)
    return items


def test_a1111_png_names_the_model(tmp_path):
    items = check(read_evidence(a1111_png(tmp_path / "a.png")))
    assert len(items) == 1
    (i,) = items
    assert (i["source"], i["claim"], i["generator"], i["family"]) == (
        "png-text",
        "ai-generated",
        "sdxl-1.0",
        "stable-diffusion-xl",
    )
    assert i["name"] == "sd_xl_base_1.0" and i["field"].startswith("PNG tEXt parameters")
    assert i["bound"] is False and i["measured"] is False and i["model_hash"] == "31e35c80fc"


def test_a1111_text_in_ztxt_and_itxt_is_read_too(tmp_path):
    items = check(read_evidence(png_with_text(tmp_path / "z.png", {"parameters": a1111_params()}, ztxt=True)))
    assert [i["generator"] for i in items] == ["sdxl-1.0"]
    assert items[0]["field"].startswith("PNG zTXt parameters")
    from evidence_fixtures import pixels
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", a1111_params() + " — ünïcode", zip=True)
    pixels().save(tmp_path / "i.png", "PNG", pnginfo=info)
    (i,) = check(read_evidence(tmp_path / "i.png"))
    assert i["generator"] == "sdxl-1.0" and i["field"].startswith("PNG iTXt parameters")


def a1111_params():
    from evidence_fixtures import A1111_PARAMS

    return A1111_PARAMS


def test_comfyui_png_names_the_checkpoint(tmp_path):
    (i,) = check(read_evidence(comfy_png(tmp_path / "c.png")))
    assert (i["claim"], i["generator"], i["family"], i["name"]) == (
        "ai-generated",
        "flux-1-schnell",
        "flux",
        "flux1-schnell-fp8.safetensors",
    )
    assert i["tool"] == "ComfyUI" and "CheckpointLoaderSimple.ckpt_name" in i["field"]


def test_comfyui_workflow_only_and_unknown_checkpoint(tmp_path):
    (i,) = read_evidence(comfy_png(tmp_path / "w.png", prompt=None))
    assert i["generator"] == "flux-1-schnell" and "workflow" in i["field"]
    odd = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "my-private-finetune.safetensors"}}}
    (j,) = read_evidence(comfy_png(tmp_path / "u.png", prompt=odd, workflow=None))
    assert (j["claim"], j["generator"], j["name"]) == ("ai-generated", None, "my-private-finetune.safetensors")


def test_other_front_ends(tmp_path):
    inv = {"model": {"name": "juggernautXL_v9", "base": "sdxl"}, "positive_prompt": "x"}
    (i,) = read_evidence(png_with_text(tmp_path / "i.png", {"invokeai_metadata": json.dumps(inv)}))
    assert (i["tool"], i["claim"], i["name"]) == ("InvokeAI", "ai-generated", "juggernautXL_v9")
    nai = {"Software": "NovelAI", "Source": "NovelAI Diffusion V4 4BDE2A90", "Comment": json.dumps({"steps": 28})}
    (n,) = read_evidence(png_with_text(tmp_path / "n.png", nai))
    assert (n["tool"], n["family"], n["name"]) == ("NovelAI", "novelai", "NovelAI Diffusion V4 4BDE2A90")
    foo = {
        "parameters": json.dumps({"base_model": "sd_xl_base_1.0_0.9vae", "refiner_model": "None"}),
        "fooocus_scheme": "fooocus",
    }
    (f,) = read_evidence(png_with_text(tmp_path / "f.png", foo))
    assert (f["tool"], f["generator"]) == ("Fooocus", "sdxl-1.0")
    dt = {"Description": json.dumps({"c": "a cat", "model": "sd_xl_base_1.0_f16.ckpt", "steps": 20})}
    (d,) = read_evidence(png_with_text(tmp_path / "d.png", dt))
    assert (d["tool"], d["generator"]) == ("Draw Things", "sdxl-1.0")


def test_xmp_digital_source_type_jpeg(tmp_path):
    items = check(read_evidence(xmp_jpeg(tmp_path / "x.jpg")))
    dst = [i for i in items if i["field"] == "XMP Iptc4xmpExt:DigitalSourceType"]
    assert len(dst) == 1
    assert (dst[0]["claim"], dst[0]["family"], dst[0]["name"]) == ("ai-generated", "midjourney", "Midjourney")
    assert dst[0]["value"].endswith("/trainedAlgorithmicMedia") and dst[0]["bound"] is False
    comp = read_evidence(xmp_jpeg(tmp_path / "c.jpg", dst="compositeWithTrainedAlgorithmicMedia", tool="Photoshop"))
    assert [i["claim"] for i in comp] == ["composite-ai", "edited"]
    cap = read_evidence(xmp_jpeg(tmp_path / "d.jpg", dst="digitalCapture", tool="Adobe Lightroom"))
    assert [i["claim"] for i in cap] == ["camera-capture", "edited"]


def test_camera_exif_jpeg(tmp_path):
    (i,) = check(read_evidence(camera_jpeg(tmp_path / "cam.jpg")))
    assert (i["source"], i["claim"], i["name"], i["software"]) == (
        "exif",
        "camera-capture",
        "Canon Canon EOS R5",
        "Firmware 1.8.1",
    )
    ai = read_evidence(camera_jpeg(tmp_path / "ai.jpg", make="", model="", software="DALL·E 3"))
    assert [(x["claim"], x["generator"]) for x in ai] == [("ai-generated", "dall-e-3")]


def test_jpeg_comment_with_a1111_parameters():
    data = jpeg_with_segment(0xFE, a1111_params().encode())
    (i,) = read_evidence_bytes(data)
    assert (i["source"], i["generator"], i["field"]) == ("jpeg-comment", "sdxl-1.0", "JPEG COM Model")
    assert read_evidence_bytes(jpeg_with_segment(0xFE, b"a photo of a flux capacitor at night, long exposure")) == []
    (d,) = read_evidence_bytes(jpeg_with_segment(0xFE, "Generated by DALL·E 3".encode()))
    assert (d["claim"], d["generator"], d["name"]) == ("ai-generated", "dall-e-3", "DALL·E 3")


# -- malformed and hostile variants: no traceback, no hang, no false claim --------------------------------
def _malformed_pngs(tmp_path):
    base = comfy_png(tmp_path / "base.png", prompt=None, workflow=None).read_bytes()
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    yield "truncated JSON", png_with_text(tmp_path / "t.png", {"prompt": '{"4": {"class_type": "Checkpo'}).read_bytes()
    yield "deep JSON", png_with_text(tmp_path / "d.png", {"prompt": "[" * 200_000 + "]" * 200_000}).read_bytes()
    yield "prompt not a dict", png_with_text(tmp_path / "l.png", {"prompt": "[1, 2, 3]"}).read_bytes()
    yield "garbage parameters", png_with_text(tmp_path / "g.png", {"parameters": "\x00\x01 nonsense"}).read_bytes()
    yield "zTXt bomb", insert_png_chunks(base, png_chunk(b"zTXt", b"parameters\x00\x00" + bomb))
    yield "bad CRC", insert_png_chunks(base, png_chunk(b"tEXt", b"parameters\x00" + a1111_params().encode(), crc=1))
    yield "chunk past EOF", base[:33] + struct_len(10_000_000) + b"tEXtparameters\x00abc"
    yield "bad iTXt", insert_png_chunks(base, png_chunk(b"iTXt", b"prompt\x00\x01\x07\x00\x00garbage"))


def struct_len(n):
    import struct

    return struct.pack(">I", n)


def _malformed_jpegs(tmp_path):
    ok = xmp_jpeg(tmp_path / "ok.jpg").read_bytes()
    yield "XMP entity bomb", jpeg_with_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP_BOMB.encode())
    yield "XMP not well-formed", jpeg_with_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:RDF><a>")
    yield "EXIF garbage", jpeg_with_segment(0xE1, b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + bytes(range(256)) * 4)
    yield "segment past EOF", jpeg_with_segment(0xFE, b"short", length=60_000)
    yield "junk JUMBF", jpeg_with_segment(0xEB, b"JP\x00\x01" + b"\x00" * 64)
    yield "truncated file", ok[:400]  # cut inside the XMP segment
    yield "random bytes", bytes(range(256)) * 40


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_malformed_metadata_never_raises_or_claims(tmp_path, kind):
    cases = list(_malformed_pngs(tmp_path) if kind == "png" else _malformed_jpegs(tmp_path))
    assert len(cases) >= 7
    for what, data in cases:
        t = time.perf_counter()
        items = check(read_evidence_bytes(data))
        assert time.perf_counter() - t < 2.0, what
        assert all(i["claim"] in ("unknown", "edited") for i in items), (what, items)


def test_truncated_file_keeps_intact_metadata(tmp_path):
    ok = xmp_jpeg(tmp_path / "ok.jpg").read_bytes()
    assert [i["claim"] for i in read_evidence_bytes(ok[: len(ok) // 2])] == ["ai-generated", "ai-generated"]


def test_changed_file_is_not_read(tmp_path):
    p = a1111_png(tmp_path / "a.png")

    class Dec:
        sha256 = "0" * 64
        format = "PNG"

    assert read_evidence(p, Dec()) == []
    assert read_evidence(tmp_path / "missing.png") == []


# -- the model-names table and its user extensions ----------------------------------------------------------
def test_user_names_file_extends_and_overrides(tmp_path, monkeypatch):
    f = tmp_path / "names.json"
    f.write_text(
        json.dumps(
            {
                "version": 1,
                "names": [
                    {"glob": "*my-private-finetune*", "generator": "acme-1", "family": "acme"},
                    {"regex": "sd_xl_base", "generator": "sdxl-custom", "family": "stable-diffusion-xl"},
                ],
            }
        )
    )
    monkeypatch.setenv("LIDA_MODEL_NAMES", str(f))
    odd = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "models/my-private-finetune.safetensors"}}}
    (j,) = read_evidence(comfy_png(tmp_path / "u.png", prompt=odd, workflow=None))
    assert (j["generator"], j["family"]) == ("acme-1", "acme")
    (a,) = read_evidence(a1111_png(tmp_path / "a.png"))
    assert a["generator"] == "sdxl-custom"  # user entries come first


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        ('{"names": {}}', '"names" list'),
        ('{"names": [{"regex": "(", "generator": "x"}]}', r"names\[0\]: bad regex"),
        ('{"names": [{"regex": "a", "glob": "b"}]}', "exactly one"),
        ('{"names": [{"regex": "a", "claim": "real"}]}', "claim 'real'"),
        ('{"names": [{"regex": "a", "colour": "red"}]}', "unknown key"),
    ],
)
def test_malformed_user_names_file_is_a_setup_error(tmp_path, monkeypatch, content, words):
    f = tmp_path / "names.json"
    f.write_text(content)
    monkeypatch.setenv("LIDA_MODEL_NAMES", str(f))
    with pytest.raises(ModelNamesError, match=words) as e:
        load_names()
    assert str(f) in str(e.value)


def test_missing_user_names_file_and_cli_exit_3(tmp_path, monkeypatch, isolated_env, capsys):
    from lida_plugin.cli import EXIT_SETUP, main

    monkeypatch.setenv("LIDA_MODEL_NAMES", str(tmp_path / "nope.json"))
    with pytest.raises(ModelNamesError, match="no such file"):
        load_names()
    assert main(["attribute", "--no-default-store", str(a1111_png(tmp_path / "a.png"))]) == EXIT_SETUP
    assert "nope.json" in capsys.readouterr().err


def test_builtin_table_maps_the_corpus_names():
    t = load_names()
    cases = {
        "v1-5-pruned-emaonly.ckpt": "sd-1.5",
        "sd_xl_turbo_1.0_fp16.safetensors": "sdxl-turbo",
        "flux1-dev.safetensors": "flux-1-dev",
        "aura_flow_0.2.safetensors": "aura-flow",
        "v2-1_768-ema-pruned.safetensors": "sd-2-v768",
        "sd3.5_large.safetensors": "sd-3.5-large",
        "FLUX.1 [dev]": "flux-1-dev",
        "DALL·E 3": "dall-e-3",
        "qwen_image_fp8.safetensors": "qwen-image",
    }
    for name, gen in cases.items():
        assert t.lookup(name).generator == gen, name
    assert t.lookup("influxdb exporter") is None and t.lookup("Adobe Photoshop 25.1").claim == "edited"
