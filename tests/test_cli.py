"""End-to-end tests of the `lida` command, run as a real subprocess where it matters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from lida_plugin.cli import EXIT_FILE_ERRORS, EXIT_OK, EXIT_SETUP, main
from lida_plugin.cores import parallel_limit

SCHEMA = json.loads((Path(__file__).parents[1] / "lida_plugin/schemas/attribution-result.schema.json").read_text())


def run(*args, input=None, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "lida_plugin.cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        env=env,
        timeout=120,
    )


def test_register_then_attribute_a_second_image(isolated_env, images, capsys):
    assert main(["register", "--generator", "gen-a", "--family", "fam", str(images["gen-a"][0])]) == EXIT_OK
    assert "registered" in capsys.readouterr().out
    assert main(["register", "--generator", "gen-a", str(images["gen-a"][0])]) == EXIT_OK
    assert "already registered" in capsys.readouterr().out
    assert main(["attribute", "--jsonl", str(images["gen-a"][1]), str(images["real"][0])]) == EXIT_OK
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["verdict"] for r in recs] == ["ai-generated", "real"]
    assert recs[0]["generator"] == "gen-a" and recs[0]["family"] == "fam"
    for r in recs:
        jsonschema.validate(r, SCHEMA)


def test_bad_inputs_each_get_a_record_and_exit_1(isolated_env, images, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("hello")
    (bad / "trunc.png").write_bytes(images["gen-a"][0].read_bytes()[:300])
    folder = tmp_path / "folder"
    folder.mkdir()
    paths = [bad / "empty.png", bad / "text.png", bad / "trunc.png", folder, tmp_path / "nope.png", images["gen-a"][1]]
    before = {p: p.read_bytes() for p in paths if p.is_file()}
    r = run("attribute", "--json", *paths)
    assert r.returncode == EXIT_FILE_ERRORS, r.stderr
    assert "Traceback" not in r.stderr
    recs = json.loads(r.stdout)
    assert [x["status"] for x in recs] == ["error"] * 5 + ["ok"]
    reasons = [x["error"] for x in recs[:5]]
    for word, reason in zip(["empty", "not an image", "truncated", "directory", "no such file"], reasons, strict=True):
        assert word in reason
    for x in recs:
        jsonschema.validate(x, SCHEMA)
    assert {p: p.read_bytes() for p in before} == before  # nothing the user passed is modified


def test_recursive_walk_and_paths_from_stdin(isolated_env, images, tmp_path):
    root = images["gen-a"][0].parent
    r = run("attribute", "--jsonl", "--recursive", root)
    assert r.returncode == EXIT_OK, r.stderr
    assert len(r.stdout.splitlines()) == 12
    r = run("attribute", "--jsonl", "-", input="\n".join(str(p) for p in images["real"]) + "\n")
    assert r.returncode == EXIT_OK and len(r.stdout.splitlines()) == 3


def test_missing_model_is_a_setup_error_not_a_traceback(tmp_path):
    r = run(
        "attribute",
        tmp_path / "x.png",
        env_extra={"LIDA_MODEL": str(tmp_path / "none.onnx"), "LIDA_STORE": str(tmp_path / "s.sqlite")},
    )
    assert r.returncode == EXIT_SETUP
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_model_that_breaks_the_contract_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "plain.onnx")
    r = run("doctor", env_extra={"LIDA_MODEL": str(tmp_path / "plain.onnx"), "LIDA_STORE": str(tmp_path / "s.sqlite")})
    assert r.returncode == EXIT_SETUP and "not a lida encoder" in r.stdout


def test_generators_store_info_export_import_and_doctor(isolated_env, images, tmp_path, capsys):
    assert main(["register", "-g", "gen-b", "-f", "fam-b", *map(str, images["gen-b"])]) == EXIT_OK
    capsys.readouterr()
    assert main(["generators", "--json"]) == EXIT_OK
    gens = json.loads(capsys.readouterr().out)
    assert [(g["name"], g["family"], g["exemplars"]) for g in gens] == [("gen-b", "fam-b", 3)]
    assert main(["store", "info"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info[0]["role"] == "user" and info[0]["exemplars"] == 3
    out = tmp_path / "shared-store.sqlite"
    assert main(["store", "export", str(out)]) == EXIT_OK
    other = tmp_path / "other.sqlite"
    assert main(["store", "import", str(out), "--store", str(other)]) == EXIT_OK
    assert "imported 3 exemplar(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # a typo used to import nothing and exit 0
        main(["store", "import", str(out), "--store", str(tmp_path / "third.sqlite"), "--generator", "gen-typo"])
    assert exc.value.code == 2 and "has no generator 'gen-typo'" in capsys.readouterr().err
    assert not (tmp_path / "third.sqlite").exists()
    with pytest.raises(SystemExit) as exc:  # likewise for remove (was exit 3, a setup error)
        main(["store", "remove", "gen-typo", "--store", str(other)])
    assert exc.value.code == 2 and "has no generator 'gen-typo'" in capsys.readouterr().err
    assert main(["doctor", "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["self_test"] == "ok" and not doc["problems"]


def test_unregistered_store_path_is_a_clear_error(isolated_env, images, tmp_path, capsys):
    assert main(["attribute", "--store", str(tmp_path / "nowhere.sqlite"), str(images["gen-a"][0])]) == EXIT_SETUP
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["attribute"], ["register", "x.png"], ["bogus"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_serve_answers_each_line_before_the_next_is_sent(isolated_env, images):
    """The warm mode of issue 14: a host writes one path, reads its record, then writes the next; no read-ahead
    may block on input that has not come yet. Bad requests are error records; the process stays up."""
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-m", "lida_plugin.cli", "serve", "--no-default-store"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        answers = []
        reqs = (str(images["gen-a"][0]), json.dumps({"path": str(images["real"][0])}), "{oops", "/no/such.png",
                "", "x" * 200_000, str(images["gen-a"][1]))  # fmt: skip
        for req in reqs:
            p.stdin.write(req + "\n")
            p.stdin.flush()
            answers.append(json.loads(p.stdout.readline()))  # blocks until this one request is answered
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()
    assert [a["status"] for a in answers] == ["ok", "ok", "error", "error", "error", "error", "ok"]
    assert answers[1]["verdict"] == "real" and answers[0]["verdict"] == "ai-generated"
    assert "JSON" in answers[2]["error"] and answers[3]["error"] == "no such file"
    assert answers[4]["error"].startswith("empty request")  # a blank line is answered too: one line in, one out
    assert answers[5]["error"] == "request line longer than 65536 bytes" and len(answers[5]["path"]) == 200


def test_lida_threads_from_the_environment(isolated_env, images, monkeypatch, capsys):
    """$LIDA_THREADS: empty means unset; a value that is not a number of threads is a usage error naming
    it (it used to surface as 'plugin lida.commands failed to register its commands: ValueError')."""
    img = str(images["gen-a"][0])
    monkeypatch.setenv("LIDA_THREADS", "abc")
    with pytest.raises(SystemExit) as exc:
        main(["attribute", img])
    assert exc.value.code == 2
    assert "'abc' is not a number of threads (--threads or $LIDA_THREADS)" in capsys.readouterr().err
    limit = parallel_limit()
    for bad in ("-2", str(limit + 1), "100000"):  # 100000 used to start 100,000 ORT threads: minutes, 16 GB
        monkeypatch.setenv("LIDA_THREADS", bad)
        with pytest.raises(SystemExit) as exc:
            main(["attribute", img])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"(--threads or $LIDA_THREADS) must be between 0 and {limit}" in err and f"got {int(bad)}" in err
    for ok in ("", "0", "1"):
        monkeypatch.setenv("LIDA_THREADS", ok)
        assert main(["attribute", "--jsonl", img]) == EXIT_OK
        assert json.loads(capsys.readouterr().out)["path"] == img


def test_parallel_counts_above_the_limit_are_refused_everywhere(isolated_env, images, tmp_path, capsys):
    """--threads, local --workers (batch, watch) and Encoder(threads=): at most 4 x the usable cores."""
    from lida_plugin.encoder import Encoder

    too_many = parallel_limit() + 1
    with pytest.raises(ValueError, match=f"threads must be between 0 and {too_many - 1}"):
        Encoder(threads=too_many)
    src = str(images["gen-a"][0])
    with pytest.raises(SystemExit) as exc:
        main(["batch", src, "--out", str(tmp_path / "out"), "--workers", str(too_many)])
    assert exc.value.code == 2
    assert f"--workers must be between 1 and {too_many - 1}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was made
    assert main(["watch", str(tmp_path), "--workers", str(too_many)]) == 2
    assert f"--workers must be between 1 and {too_many - 1}" in capsys.readouterr().err


def test_a_model_path_that_is_a_folder_is_named_as_one(isolated_env, images, tmp_path, capsys):
    assert main(["attribute", "--model", str(tmp_path), str(images["gen-a"][0])]) == EXIT_SETUP
    assert f"encoder model {tmp_path} (from --model) is a folder, not an ONNX file" in capsys.readouterr().err


@pytest.mark.parametrize("k", ["0", "-3", "x"])
def test_top_k_below_one_is_a_usage_error_not_another_verdict(isolated_env, images, capsys, k):
    """-k 0 used to be taken and to change the verdict to 'no generator is registered'."""
    with pytest.raises(SystemExit) as exc:
        main(["attribute", "-k", k, str(images["gen-a"][0])])
    assert exc.value.code == 2
    assert "--top-k must be a whole number >= 1" in capsys.readouterr().err


def test_attributor_refuses_top_k_below_one(isolated_env):
    from lida_plugin.attribute import Attributor
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import open_stack

    enc = Encoder(threads=1)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        Attributor(enc, open_stack(enc), top_k=0)


def test_a_store_in_a_read_only_folder_serves_attribution(isolated_env, images, tmp_path, capsys):
    """A user store on a read-only mount or in a folder this user may not write: attribution reads it
    (it used to fail: 'not a readable lida store: attempt to write a readonly database')."""
    import shutil

    store = tmp_path / "ro" / "s.sqlite"
    assert main(["register", "--store", str(store), "-g", "gen-x", str(images["gen-a"][0])]) == EXIT_OK
    (tmp_path / "ro").chmod(0o555)
    cmd = [sys.executable, "-m", "lida_plugin.cli", "attribute", "--jsonl", "--store", str(store),
           str(images["gen-a"][0])]  # fmt: skip
    if os.geteuid() == 0:  # root writes anywhere: run without the capability that lets it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder unwritable")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, LIDA_THREADS="1"))
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert proc.returncode == EXIT_OK, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["exact_match"]["generator"] == "gen-x"
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["s.sqlite"]  # nothing written beside it


def test_an_empty_file_as_store_is_refused_not_filled(isolated_env, images, tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert main(["attribute", "--store", str(empty), str(images["gen-a"][0])]) == EXIT_SETUP
    assert "is an empty file, not a lida store" in capsys.readouterr().err
    assert empty.stat().st_size == 0


def test_store_export_into_a_missing_folder_is_a_setup_error(isolated_env, images, tmp_path, capsys):
    assert main(["register", "-g", "gen-x", str(images["gen-a"][0])]) == EXIT_OK
    dest = tmp_path / "nope" / "copy.sqlite"
    assert main(["store", "export", str(dest)]) == EXIT_SETUP  # was sqlite3.OperationalError
    assert f"{dest}: the folder {dest.parent} does not exist" in capsys.readouterr().err


def test_watch_outputs_that_are_files_are_setup_errors(isolated_env, tmp_path, capsys):
    inbox = tmp_path / "in"
    inbox.mkdir()
    afile = tmp_path / "a-file"
    afile.write_text("mine")
    for opt in ("--out", "--quarantine"):
        args = ["watch", str(inbox), opt, str(afile)] + (["--out", str(tmp_path / "o")] if opt != "--out" else [])
        assert main(args) == EXIT_SETUP  # was FileExistsError
        assert f"{afile} exists and is not a folder" in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_register_leaves_no_empty_generator_and_names_a_weak_exemplar(isolated_env, images, tmp_path, capsys, caplog):
    assert main(["register", "-g", "typo-gen", str(tmp_path / "nope.png")]) == EXIT_FILE_ERRORS
    assert "generator 'typo-gen' not created" in capsys.readouterr().err
    assert main(["generators", "--json", "--no-default-store"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
    with pytest.raises(SystemExit) as exc:
        main(["register", "-g", " ", str(images["gen-a"][0])])
    assert exc.value.code == 2 and "needs a non-empty name" in capsys.readouterr().err
    from PIL import Image

    jpg = tmp_path / "lossy.jpg"
    Image.open(images["gen-a"][0]).convert("RGB").save(jpg, quality=90)
    assert main(["register", "-g", "gen-j", str(jpg)]) == EXIT_OK
    assert any("registered, but its low bits are not the generator's" in r.getMessage() for r in caplog.records)


def test_generators_text_output_escapes_names(isolated_env, images, capsys):
    assert main(["register", "-g", "evil\n\x1b[2J", str(images["gen-a"][0])]) == EXIT_OK
    capsys.readouterr()
    assert main(["generators", "--no-default-store"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and out.startswith("evil\\n\\x1b[2J\t")


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [("LIDA_DEVICE", "xyz", "LIDA_DEVICE='xyz': use one of auto, cpu, cuda, tensorrt"),
     ("LIDA_COUNTS", "zz", "LIDA_COUNTS='zz': use 'auto'")],
)  # fmt: skip
def test_environment_values_no_command_takes_are_usage_errors(isolated_env, images, monkeypatch, capsys, var, value,
                                                             message):  # fmt: skip
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as exc:
        main(["attribute", str(images["gen-a"][0])])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_empty_lida_device_means_unset_and_batch_size_must_be_positive(isolated_env, images, monkeypatch, capsys):
    monkeypatch.setenv("LIDA_DEVICE", " ")
    assert main(["attribute", "--jsonl", str(images["gen-a"][0])]) == EXIT_OK
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["attribute", "--batch-size", "0", str(images["gen-a"][0])])
    assert exc.value.code == 2 and "--batch-size must be a whole number >= 1" in capsys.readouterr().err


def test_no_files_with_json_is_still_a_json_document(isolated_env, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["attribute", "--json", "-r", str(tmp_path / "empty")]) == EXIT_FILE_ERRORS
    assert json.loads(capsys.readouterr().out) == []


def test_a_reader_that_went_away_is_not_success(isolated_env, images):
    """`lida ... | head -1`: a closed pipe used to exit 0, which for `lida verify` reads as "Trusted"."""
    from lida_plugin.cli_options import EXIT_BROKEN_PIPE

    cmd = [sys.executable, "-m", "lida_plugin.cli", "attribute", str(images["gen-a"][0])]
    env = dict(os.environ, LIDA_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line (the process takes a second to start)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_BROKEN_PIPE == 141, err
    assert b"Traceback" not in err


def test_a_lida_store_that_does_not_exist_is_said(isolated_env, images, caplog):
    """A typo in $LIDA_STORE used to leave the user's generators out without a word (--store refuses it)."""
    assert main(["attribute", "--jsonl", str(images["gen-a"][0])]) == EXIT_OK
    assert any("does not exist (yet): only the bundled default store is searched" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_a_long_running_attributor_sees_a_register_and_a_remove_by_another_process(isolated_env, images, tmp_path):
    """`lida serve`, `lida watch` and hosts keep one Attributor: it used to answer with the store as it was at
    its start (a newly registered exemplar unknown, a removed one still an exact match)."""
    from lida_plugin.attribute import Attributor
    from lida_plugin.decode import decode_file
    from lida_plugin.encoder import Encoder
    from lida_plugin.store import ExemplarStore, open_stack

    enc = Encoder(threads=1)
    a, b = str(images["gen-a"][0]), str(images["gen-b"][0])
    assert main(["register", "-g", "gen-x", a]) == EXIT_OK
    att = Attributor(enc, open_stack(enc, use_default=False))
    assert att.attribute_file(b).exact_match is None
    with ExemplarStore(isolated_env) as other:  # another connection: what `lida register` in a shell does
        other.register(enc, decode_file(b), "gen-y")
    rec = att.attribute_file(b)
    assert rec.exact_match["generator"] == "gen-y" and rec.generator == "gen-y"
    with ExemplarStore(isolated_env) as other:
        other.remove_generator("gen-y", backup=False)
    assert att.attribute_file(b).exact_match is None
    assert att.attribute_file(a).exact_match["generator"] == "gen-x"  # what stayed is still there
