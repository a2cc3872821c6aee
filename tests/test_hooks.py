"""The pluggy contract: entry-point loading from installed metadata, the hooks, the docs, the example host."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pluggy
import pytest
from leakcheck import no_thread_leaks  # noqa: F401  (autouse)

from lida_plugin import hookimpl, hookspecs
from lida_plugin.manager import new_plugin_manager, plugin_assertions, plugin_names

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "lida_plugin/schemas/attribution-result.schema.json").read_text())
HOOKS = sorted(n for n, f in vars(hookspecs).items() if n.startswith("lida_") and callable(f))


@pytest.fixture
def builtin_closed():
    from lida_plugin import plugin

    yield
    plugin.close()


@pytest.fixture
def sink_dist(tmp_path, monkeypatch):
    """Install a third-party plugin distribution whose entry point is lida_hooks.example_sink (metadata only)."""
    site = tmp_path / "site"
    info = site / "lida_example_sink-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lida-example-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lida_plugin]\nexample-sink = lida_hooks.example_sink\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(REPO))
    sink = tmp_path / "sink.jsonl"
    monkeypatch.setenv("LIDA_EXAMPLE_SINK", str(sink))
    return sink


def test_lida_is_an_installed_entry_point():
    eps = {ep.name: ep for ep in metadata.entry_points(group="lida_plugin")}
    assert eps["lida"].value == "lida_plugin.plugin"
    assert eps["lida"].dist.name == "lida-plugin"


def test_host_loads_lida_by_entry_point_and_calls_the_hooks(isolated_env, images, builtin_closed):
    pm = pluggy.PluginManager("lida_plugin")
    pm.add_hookspecs(hookspecs)
    assert pm.load_setuptools_entrypoints("lida_plugin") >= 1
    builtin = pm.get_plugin("lida")
    assert builtin is not None and builtin.__name__ == "lida_plugin.plugin"
    assert dict(pm.list_plugin_distinfo())[builtin].project_name == "lida-plugin"

    path = str(images["gen-a"][0])
    record = pm.hook.lida_analyze_asset(path=path, config={"device": "cpu", "threads": 1, "use_default_store": False})
    jsonschema.validate(record, SCHEMA)
    assert record["status"] == "ok" and record["path"] == path and record["verdict"] == "ai-generated"
    bad = pm.hook.lida_analyze_asset(
        path=str(images["gen-a"][0]) + ".missing", config={"device": "cpu", "use_default_store": False}
    )
    assert bad["status"] == "error" and "no such file" in bad["error"]
    # broadcasts with no host plugin: nothing registered for them, no error
    assert pm.hook.lida_asset_done(path=path, record=record, outputs={}) == []
    assert pm.hook.lida_manifest_assertions(path=path, record=record, manifest={}) == []


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [({"force": "false"}, TypeError, "'force' must be bool, got str"),
     ({"use_default_store": "false"}, TypeError, "'use_default_store' must be bool"),
     ({"top_k": 0}, ValueError, "'top_k' must be >= 1"), ({"threads": "x"}, TypeError, "'threads' must be int"),
     ({"threads": True}, TypeError, "'threads' must be int"), ([("force", True)], TypeError, "must be a dict")],
)  # fmt: skip
def test_host_config_of_the_wrong_type_is_refused_not_coerced(isolated_env, images, builtin_closed, config, error,
                                                              message):  # fmt: skip
    """A string "false" for force used to count as true (a forced verdict), top_k 0 became 5 silently, a bad
    threads value was "'<' not supported"."""
    from lida_plugin import plugin

    with pytest.raises(error, match=message):
        plugin.lida_analyze_asset(path=str(images["gen-a"][0]), config=config)


def test_a_path_that_is_not_one_is_refused_or_gets_its_record(isolated_env, images, builtin_closed):
    from lida_plugin import plugin

    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got NoneType"):
        plugin.lida_analyze_asset(path=None, config={"use_default_store": False})
    att = plugin.attributor_for({"use_default_store": False, "threads": 1})
    got = list(att.attribute_paths([str(images["gen-a"][0]), None, str(images["gen-a"][1])]))
    assert [r.status for r in got] == ["ok", "error", "ok"]  # a None used to end the run: 1 record for 3
    assert got[1].error == "not a path: NoneType"


def test_host_plugin_overrides_analysis_first():
    class Remote:
        @hookimpl
        def lida_analyze_asset(self, path, config):
            return {"path": path, "status": "ok", "verdict": "real", "from": "remote"} if path.endswith(".x") else None

    pm = new_plugin_manager(load_entrypoints=False)
    pm.register(Remote())
    assert pm.hook.lida_analyze_asset(path="a.x", config={})["from"] == "remote"
    with pytest.raises(ValueError, match="unknown lida config"):  # falls through to the built-in
        pm.hook.lida_analyze_asset(path="a.y", config={"no_such_key": 1})


def test_third_party_plugin_by_entry_point(isolated_env, images, sink_dist, monkeypatch, builtin_closed):
    pm = new_plugin_manager()
    assert {"lida", "example-sink"} <= set(plugin_names(pm))
    path = str(images["real"][0])
    record = pm.hook.lida_analyze_asset(path=path, config={"device": "cpu", "threads": 1, "use_default_store": False})
    pm.hook.lida_asset_done(path=path, record=record, outputs={"report": "r.json"})
    line = json.loads(sink_dist.read_text())
    assert line == {"path": path, "status": "ok", "verdict": "real", "generator": None, "error": None,
                    "outputs": {"report": "r.json"}}  # fmt: skip
    got = plugin_assertions(pm, path=path, record=record, manifest={"assertions": []})
    assert [a["label"] for a in got] == ["org.example.ingest"]

    monkeypatch.setenv("LIDA_LOAD_PLUGINS", "")  # restrict: only the built-in
    assert plugin_names(new_plugin_manager()) == ["lida"]
    monkeypatch.setenv("LIDA_LOAD_PLUGINS", "example-sink")
    assert set(plugin_names(new_plugin_manager())) == {"lida", "example-sink"}


def test_plugin_assertions_drop_reserved_and_malformed():
    class Bad:
        @hookimpl
        def lida_manifest_assertions(self, path, record, manifest):
            return [
                {"label": "org.lida.attribution", "data": {}},
                {"label": "x"},
                "nope",
                {"label": "org.ok", "data": {}},
            ]

    class Raises:
        @hookimpl
        def lida_manifest_assertions(self):
            raise RuntimeError("boom")

    pm = new_plugin_manager(load_entrypoints=False)
    pm.register(Bad())
    assert plugin_assertions(pm, path="a", record={}, manifest={}) == [{"label": "org.ok", "data": {}}]
    pm.register(Raises())
    assert plugin_assertions(pm, path="a", record={}, manifest={}) == []


def test_plugin_assertions_cannot_change_ours_and_a_wrong_result_type_is_dropped():
    """A plugin that edited lida's assertion in place changed what was signed; one that returned 5 stopped
    the manifest ("'int' object is not iterable") and the other plugins' assertions with it."""

    class Mutates:
        @hookimpl
        def lida_manifest_assertions(self, path, record, manifest):
            manifest["assertions"][0]["data"]["verdict"] = "real"
            record["verdict"] = "real"
            return 5

    class Fine:
        @hookimpl
        def lida_manifest_assertions(self):
            return [{"label": "org.ok", "data": {"n": 1}}]

    pm = new_plugin_manager(load_entrypoints=False)
    pm.register(Mutates())
    pm.register(Fine())
    manifest = {"assertions": [{"label": "org.lida.attribution", "data": {"verdict": "ai-generated"}}]}
    record = {"verdict": "ai-generated"}
    assert plugin_assertions(pm, path="a", record=record, manifest=manifest) == [{"label": "org.ok", "data": {"n": 1}}]
    assert manifest["assertions"][0]["data"]["verdict"] == "ai-generated" and record["verdict"] == "ai-generated"


def test_trace_env_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("LIDA_TRACE_PLUGINS", "1")
    pm = new_plugin_manager(load_entrypoints=False)
    pm.hook.lida_asset_done(path="p.png", record={"status": "ok"}, outputs={})
    err = capsys.readouterr().err
    assert "lida_asset_done(path, record, outputs)" in err and "result: []" in err


def test_lida_attribute_calls_asset_done(isolated_env, images, capsys, monkeypatch):
    import tqdm

    from lida_plugin.cli import main

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no process-wide tqdm monitor thread
    seen = []

    class Sink:
        @hookimpl
        def lida_asset_done(self, path, record, outputs):
            seen.append((path, record["status"]))

    pm = new_plugin_manager()  # the host's manager travels into the command, no global one
    pm.register(Sink())
    paths = [str(images["gen-b"][0]), str(images["real"][1]), str(images["real"][1]) + ".missing"]
    assert main(["attribute", "--jsonl", "--no-default-store", *paths], pm=pm) == 1
    assert seen == [(paths[0], "ok"), (paths[1], "ok"), (paths[2], "error")]
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_docs_mention_every_hook_and_argument():
    """Like datasette's test_docs: docs/hooks.md has a heading `name(args)` per hook, args as in the spec."""
    doc = (REPO / "docs/hooks.md").read_text()
    headings = dict(re.findall(r"^### `(lida_\w+)\(([^)]*)\)`", doc, re.M))
    assert sorted(headings) == HOOKS
    for name in HOOKS:
        spec_args = list(inspect.signature(getattr(hookspecs, name)).parameters)
        assert [a.strip() for a in headings[name].split(",")] == spec_args, name
        section = doc.split(f"### `{name}(")[1].split("\n### ")[0]
        for arg in spec_args:
            assert f"`{arg}`" in section, f"{name}: argument {arg} is not described"
        assert getattr(hookspecs, name).__doc__.strip(), f"{name} has no docstring contract"
    readme = (REPO / "README.md").read_text() if (REPO / "README.md").exists() else ""
    for name in HOOKS:
        assert name in readme, f"README does not mention {name}"


def test_example_host_runs(tmp_path, isolated_env, images):
    folder = images["gen-a"][0].parent
    sink = tmp_path / "records.jsonl"
    env = dict(os.environ, LIDA_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "lida_hooks.example_host", str(folder), "--sink", str(sink), "--no-default-store"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lida" in proc.stderr.splitlines()[0]
    lines = [json.loads(x) for x in sink.read_text().splitlines()]
    assert len(lines) == len(list(folder.iterdir())) == 12
    assert {x["verdict"] for x in lines} <= {"real", "ai-generated"}


def test_broken_plugin_is_a_clear_setup_error(tmp_path, monkeypatch):
    from lida_plugin.errors import LidaError

    site = tmp_path / "site"
    info = site / "lida_broken-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lida-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lida_plugin]\nbroken = no_such_module_for_lida\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(LidaError, match="plugin failed to load.*LIDA_LOAD_PLUGINS"):
        new_plugin_manager()
    monkeypatch.setenv("LIDA_LOAD_PLUGINS", "")
    assert plugin_names(new_plugin_manager()) == ["lida"]
