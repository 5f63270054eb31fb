"""Config loading: defaults, overrides, and one clear error line for every kind of mistake."""

from __future__ import annotations

import configparser
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from stages.config import SECTIONS, load_config
from stages.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(text)
    return path


def test_shipped_config_documents_every_key_and_nothing_else():
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.read(ROOT / "config.ini")
    assert set(parser.sections()) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert set(parser[name]) == {f.name for f in dataclasses.fields(cls)}, name


def test_shipped_config_values_equal_dataclass_defaults():
    cfg = load_config(ROOT / "config.ini")
    for name, cls in SECTIONS.items():
        default = cls()
        for f in dataclasses.fields(cls):
            value, want = getattr(cfg.section(name), f.name), getattr(default, f.name)
            if f.metadata.get("auto") and want == Path("auto"):   # the shipped LLM is embedded
                want = Path(f.metadata["auto"][0])
            if isinstance(want, Path):
                assert value == ROOT / want, f"{name}.{f.name}"
            else:
                assert value == want, f"{name}.{f.name}"


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = write(tmp_path, "[paths]\nimages = pics\n")
    cfg = load_config(path)
    assert cfg.paths.images == tmp_path / "pics"
    assert cfg.paths.cache == tmp_path / "cache"


def test_set_overrides_file_and_resolves_paths_against_cwd(tmp_path):
    path = write(tmp_path, "[llm]\ntemperature = 0.5\n[paths]\nimages = pics\n")
    cwd = tmp_path / "elsewhere"
    cfg = load_config(path, ["llm.temperature=0.9", "paths.images=mine"], cwd=cwd)
    assert cfg.llm.temperature == 0.9
    assert cfg.paths.images == cwd.resolve() / "mine"


def test_lists_and_booleans_parse(tmp_path):
    path = write(tmp_path, "[generate]\nseeds = 1, 2,3\n[interpret]\noverwrite = yes\n"
                 "trigger_words = sks style, photo\n[llm]\nbase_url = http://a/v1, http://b/v1\n")
    cfg = load_config(path)
    assert cfg.generate.seeds == (1, 2, 3)
    assert cfg.interpret.overwrite is True
    assert cfg.interpret.trigger_words == ("sks style", "photo")
    assert cfg.llm.base_url == ("http://a/v1", "http://b/v1")


@pytest.mark.parametrize("text, overrides, expected", [
    ("[bogus]\nx = 1\n", [], "[bogus]: unknown section; accepted sections: paths"),
    ("[llm]\ntemprature = 0.3\n", [], "llm.temprature: unknown key; did you mean llm.temperature? "
                                    "accepted keys in [llm]:"),
    ("[llm]\ntemperature = hot\n", [], "llm.temperature = 'hot': wrong type; expected a number"),
    ("[llm]\ntemperature = 3\n", [], "above the maximum 2.0; expected a number from 0.0 to 2.0"),
    ("[llm]\nconcurrency = 0\n", [], "below the minimum 1"),
    ("[vision]\nbackend = clip\n", [], "'clip' is not accepted; expected one of: classifier, openai"),
    ("[interpret]\noverwrite = maybe\n", [], "expected true or false"),
    ("[generate]\nseeds = 1, x\n", [], "generate.seeds = '1, x': wrong type"),
    ("[llm]\nbase_url = localhost:8000\n", [], "'localhost:8000' is not a URL"),
    ("[evaluate]\nmetrics = clipscore, fid\n", [], "unknown metric 'fid'"),
    ("", ["llm.nope=1"], "--set llm.nope: unknown key"),
    ("", ["nosection.key=1"], "--set nosection.key: unknown section"),
    ("", ["llm.temperature"], "expected SECTION.KEY=VALUE"),
    ("[llm\n", [], "cannot parse"),
    ("[llm]\nstop = ###\n", [], "quote the value"),
    ("[llm]\nstop = a ;b\n", [], "llm.stop"),
    ("", ["run.name=../x"], "run.name = '../x'"),
    ("[run]\nname = a/b\n", [], "no slashes"),
    ("[llm]\nbackend = vllm\n", [], "llm.model: llm.backend = vllm"),
])
def test_errors_name_file_key_problem_and_accepted_values(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    if not overrides:
        assert str(path) in message


def test_quoted_values_keep_comment_characters_and_comments_are_still_cut(tmp_path):
    path = write(tmp_path, '[llm]\nstop = "###, ; end"   ; two stop strings\n'
                 'model = my-model  # a comment\n')
    cfg = load_config(path)
    assert cfg.llm.stop == ("###", "; end") and cfg.llm.model == "my-model"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.ini")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("program", ["caption.py", "refine.py"])
def test_help_imports_no_heavy_library(program):
    """`--help` stays quick because torch, transformers, diffusers and openai load lazily;
    the test checks that (what is imported), not a time, which depends on the machine."""
    result = run_cli(str(ROOT / program), "--help")
    assert result.returncode == 0
    assert "--dry-run" in result.stdout and "--shard" in result.stdout
    script = str(ROOT / program)
    probe = run_cli("-c", "import sys, runpy; sys.argv=['x','--help']\n"
                    f"try:\n runpy.run_path({script!r}, run_name='__main__')\n"
                    "except SystemExit: pass\n"
                    "print(sorted(m for m in ('torch','transformers','diffusers','openai') "
                    "if m in sys.modules))")
    assert probe.stdout.strip().endswith("[]")


@pytest.mark.parametrize("args, expected", [
    (["--set", "llm.temperature=warm"], "llm.temperature = 'warm': wrong type"),
    (["--set", "llm.bogus=1"], "unknown key"),
    (["--shard", "3/2"], "--shard '3/2'"),
    (["--only", "nonsense"], "unknown stage 'nonsense'"),
])
def test_cli_bad_config_is_one_line_exit_2_no_traceback(args, expected):
    result = run_cli(str(ROOT / "caption.py"), *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_server_is_one_line_exit_2(tmp_path):
    result = run_cli(str(ROOT / "caption.py"), "--quiet", "--set", "llm.base_url=http://127.0.0.1:9/v1",
                     "--set", f"paths.cache={tmp_path / 'cache'}",
                     "--set", f"paths.captions={tmp_path / 'captions'}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: cannot reach the LLM server at http://127.0.0.1:9/v1")
    assert "llm.base_url = local" in lines[0]


def test_an_evaluation_blip_captioner_needs_its_own_model(tmp_path):
    """evaluate.vision_backend = blip inherits vision.model only from a blip [vision]: a
    classifier's or a VLM's model name is no BLIP checkpoint, so it must be named."""
    path = write(tmp_path, "[vision]\nbackend = openai\nmodel = some-vlm\n")
    with pytest.raises(ConfigError, match="evaluate.vision_model"):
        load_config(path, ["evaluate.vision_backend=blip"])
    cfg = load_config(path, ["evaluate.vision_backend=blip", "evaluate.vision_model=models/blip"])
    assert cfg.evaluate.vision_model == "models/blip"
    blip = write(tmp_path, "[vision]\nbackend = blip\nmodel = models/blip\n")
    assert load_config(blip, ["evaluate.vision_backend=blip"]).evaluate.vision_backend == "blip"


@pytest.mark.parametrize("args, expected", [
    (["--set", "interpret.trigger_word=x"], "did you mean interpret.trigger_words?"),
    (["--set", "llm.modle=x"], "did you mean llm.model?"),
    (["--set", "llm.trigger_words=x"], "did you mean interpret.trigger_words?"),   # other section
    (["--set", "interpet.overwrite=true"], "did you mean interpret.overwrite?"),
    (["--only", "interpet"], "did you mean interpret?"),
    (["--only", "tags,interogate"], "did you mean interrogate?"),
])
def test_a_mistyped_key_section_or_stage_gets_the_closest_name(args, expected):
    """Config errors name the accepted name nearest to the typo (difflib), still on one line."""
    result = run_cli(str(ROOT / "caption.py"), *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_mistyped_section_in_the_file_gets_the_closest_name(tmp_path):
    path = write(tmp_path, "[interpet]\noverwrite = true\n")
    with pytest.raises(ConfigError, match=r"\[interpet\]: unknown section; did you mean \[interpret\]\?"):
        load_config(path)


def test_a_name_close_to_nothing_gets_no_suggestion():
    result = run_cli(str(ROOT / "caption.py"), "--set", "llm.zzzzqq=1", "--only", "tags")
    assert result.returncode == 2 and "unknown key" in result.stderr
    assert "did you mean" not in result.stderr


@pytest.mark.parametrize("script, stage, other", [
    ("caption.py", "upsample", "refine.py"), ("refine.py", "interpret", "caption.py"),
    ("caption.py", "Generate", "refine.py")])
def test_a_stage_of_the_other_program_says_which_program_runs_it(script, stage, other):
    """`caption.py --only upsample` said only "unknown stage": the name is right, the program
    is not."""
    result = run_cli(str(ROOT / script), "--only", stage)
    assert result.returncode == 2
    assert f"{stage.lower()} is a stage of {other}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("given, key", [
    ("generate.seeds=", "generate.seeds"), ("llm.base_url=locl", "llm.base_url"),
    ("input.image_column=txt", "input.image_column"), ("evaluate.metrics=clip,nonsense", "evaluate.metrics")])
def test_a_cross_check_names_the_set_it_comes_from_not_the_file(tmp_path, given, key):
    """`--set generate.seeds=` was reported as "config.ini: generate.seeds is empty": the
    user looks in a file that does not say it. The same value from the file names the file."""
    with pytest.raises(ConfigError) as raised:
        load_config(ROOT / "config.ini", [given])
    assert str(raised.value).startswith(f"--set {key}"), raised.value
    section, _, rest = given.partition(".")
    name, _, value = rest.partition("=")
    path = write(tmp_path, f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}: {key}"), raised.value


@pytest.mark.parametrize("args, expected", [
    (["--dryrun"], "did you mean --dry-run?"), (["--quite"], "did you mean --quiet?"),
    (["--exprot", "hf", "out"], "did you mean --export?"),
    (["my", "photos"], "'my photos'")])
def test_a_mistyped_option_or_an_unquoted_path_gets_a_hint(args, expected):
    """argparse said only "unrecognized arguments: --dryrun", and for `caption.py my photos`
    (a folder with a space, unquoted) "unrecognized arguments: photos"."""
    result = run_cli(str(ROOT / "caption.py"), *args)
    assert result.returncode == 2 and expected in result.stderr, result.stderr


@pytest.mark.parametrize("given, expected", [
    ("llm.url", "did you mean llm.base_url?"), ("vision.url", "did you mean vision.base_url?"),
    ("llm.ctx", "did you mean llm.local_ctx?")])
def test_a_key_named_by_a_word_of_its_name_gets_that_key_of_its_own_section(given, expected):
    """`--set llm.url=...` suggested tags.url (the danbooru address of another section) while
    llm.base_url, the key meant, is in the section named."""
    with pytest.raises(ConfigError) as raised:
        load_config(ROOT / "config.ini", [f"{given}=x"])
    assert expected in str(raised.value), raised.value


@pytest.mark.parametrize("given, expected", [
    ("images=photos", "did you mean --set paths.images=photos?"),
    ("temperature=0.2", "did you mean --set llm.temperature=0.2?"),
    ("interpret.skip", "did you mean --set interpret.skip=true?")])
def test_a_set_without_its_section_or_value_gets_the_full_form(given, expected):
    """`--set images=photos` said only "expected SECTION.KEY=VALUE": the key names one
    setting, so that is the one to suggest (a key without a value: a flag, set true)."""
    with pytest.raises(ConfigError) as raised:
        load_config(ROOT / "config.ini", [given])
    assert expected in str(raised.value), raised.value
