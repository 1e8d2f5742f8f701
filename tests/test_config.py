import re
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from edge.config import BUILTIN_CONFIG, allowed_keys, load_config, parse_config
from edge.errors import ConfigError
from edge.values import TriggerMode

from support import ROOT, edge_agent

BASE = """\
[device]
data_dir = "data"
model = "auto"
sample_rate = 16000

[vault]
backend = "keyring"

[trigger]
mode = "wake"
wake_phrase = "라디오"
grammar = ["메시지", "위치"]

[household]

[profiles.parent]
kind = "adult"
keep_audio = "24h"
keep_transcript = "30d"

[profiles.kid]
kind = "child"
keep_audio = "1h"
keep_transcript = "7d"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "household.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_is_valid():
    config = load_config(ROOT / "configs" / "household.example.toml")
    assert [p.name for p in config.profiles] == ["parent", "child", "guest"]
    assert config.profile("child").is_child and not config.profile("child").allow_training
    assert config.trigger.mode == "wake" and config.trigger.wake_phrase == "라디오"


EXAMPLE_HEADERS = {
    **{table: f"[{table}]" for table in ("device", "vault", "trigger", "household", "retention", "speaker", "voice_commands")},
    "profiles.NAME": "[profiles.parent]",
    "wyoming": "[[wyoming]]",
}
"""Where in the example each table's keys are shown (a profile's: in the first profile)."""


def undocumented_in_example(text: str) -> list[str]:
    """The keys the parser allows that the example config does not show (set, or commented
    out as `# key =`) in their own table."""
    missing = []
    for table, keys in allowed_keys().items():
        if table == "":
            missing += [name for name in keys if not re.search(rf"^(# )?\[\[?{name}[].]", text, re.MULTILINE)]
            continue
        header = re.search(rf"^(# )?{re.escape(EXAMPLE_HEADERS[table])}", text, re.MULTILINE)
        assert header is not None, f"the example config has no {EXAMPLE_HEADERS[table]} table"
        section = re.split(r"^(?:# )?\[", text[header.end() :], maxsplit=1, flags=re.MULTILINE)[0]
        missing += [f"{table}.{key}" for key in keys if not re.search(rf"^(# )?{key} =", section, re.MULTILINE)]
    return missing


def undocumented_in_readme(text: str) -> list[str]:
    """The keys the parser allows that README's Configuration table has no row for."""
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        found = re.match(r"^\| `(\[\[?[a-zA-Z_.]+\]\]?) ([^|]*)\|", line)
        if found:
            rows.setdefault(found[1], set()).update(re.findall(r"`([a-z_]+)`", f"`{found[2]}"))
    missing = []
    for table, keys in allowed_keys().items():
        if table != "":
            header = f"[[{table}]]" if table == "wyoming" else f"[{table}]"
            missing += [f"{table}.{key}" for key in keys if key not in rows.get(header, set())]
    return missing


def test_allowed_keys_are_the_parsers():
    """allowed_keys is what the reader enforces: each table's unknown-key error lists exactly
    those keys, and a few keys known to be there are."""
    keys = allowed_keys()
    assert {"data_dir", "control_socket"} <= set(keys["device"]) and "keep_unrecognised" in keys["wyoming"]
    assert set(keys[""]) == {"device", "vault", "trigger", "household", "retention", "speaker", "profiles", "wyoming", "voice_commands"}
    for table in ("device", "vault", "household", "retention", "speaker"):
        data = tomllib.loads(BASE)
        data.setdefault(table, {})["no_such_key"] = 1
        with pytest.raises(ConfigError) as caught:
            parse_config(data, Path("/x/household.toml"))
        assert str(caught.value).endswith(f"the keys allowed there are: {', '.join(keys[table])}"), str(caught.value)


def test_example_config_documents_every_key():
    """A key added to the parser and not to the example config fails here: the list of keys
    is the parser's own (allowed_keys), not one kept by hand beside it."""
    assert undocumented_in_example((ROOT / "configs" / "household.example.toml").read_text(encoding="utf-8")) == []


def test_readme_documents_every_key():
    assert undocumented_in_readme((ROOT / "README.md").read_text(encoding="utf-8")) == []


def test_a_key_left_out_is_named():
    """Positive control: removing a key's line (one the old hand-written list did not have)
    from the example or README's row is caught, in its table."""
    example = (ROOT / "configs" / "household.example.toml").read_text(encoding="utf-8")
    assert undocumented_in_example(example.replace("wake_confidence = 0.8", "")) == ["trigger.wake_confidence"]
    assert undocumented_in_example(example.replace("# keep_unrecognised = false", "")) == ["wyoming.keep_unrecognised"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert undocumented_in_readme(readme.replace(", `margin` |", " |")) == ["speaker.margin"]


def test_wyoming_listeners(tmp_path):
    config = load_config(
        write(
            tmp_path,
            BASE + '\n[[wyoming]]\nuri = "unix:///run/edge-wyoming/10300.sock"\nprofile = "kid"\n'
            '\n[[wyoming]]\nuri = "stdio://"\nname = "edge (Rhasspy)"\n',
        )
    )
    kids, stdio = config.listeners
    assert (kids.transport, kids.socket, kids.profile, kids.name) == ("unix", Path("/run/edge-wyoming/10300.sock"), "kid", "edge (kid)")
    assert (stdio.transport, stdio.socket, stdio.profile, stdio.name) == ("stdio", None, None, "edge (Rhasspy)")
    assert load_config(write(tmp_path, BASE)).listeners == ()


def test_builtin_config_is_the_example():
    assert BUILTIN_CONFIG.read_bytes() == (ROOT / "configs" / "household.example.toml").read_bytes()


def test_base_config_values(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.device.data_dir == tmp_path / "data"  # relative to the config file
    assert config.profile("kid").keep_audio == timedelta(hours=1)
    assert config.profile("parent").inactive_after == timedelta(days=90)  # default
    assert config.trigger.silence_end == timedelta(milliseconds=800)
    assert config.household.active_profile is None
    with pytest.raises(AttributeError):
        config.trigger.mode = TriggerMode.ALWAYS  # type: ignore[misc]  # frozen: what the test checks


# (name, how to change BASE, strings the error must contain: the key path and what is allowed)
BAD_CONFIGS = [
    ("unknown top-level table", BASE + "\n[telemetry]\nurl = 'x'\n", ["unknown key 'telemetry'", "device"]),
    ("typo in a profile key", BASE.replace('keep_audio = "1h"', 'keep_adio = "1h"'), ["profiles.kid.keep_adio", "keep_audio"]),
    ("unknown device key", BASE.replace("sample_rate = 16000", "sample_rate = 16000\nmic = 1"), ["device.mic"]),
    ("bad duration", BASE.replace('keep_audio = "1h"', 'keep_audio = "1 hour"'), ["profiles.kid.keep_audio", "'1 hour'", '"24h"']),
    ("duration as a number", BASE.replace('keep_audio = "1h"', "keep_audio = 3600"), ["profiles.kid.keep_audio", "a string"]),
    (
        "child allowed training",
        BASE.replace('kind = "child"', 'kind = "child"\nallow_training = true'),
        ["profiles.kid.allow_training = true is not allowed", "child"],
    ),
    (
        "training not a bool",
        BASE.replace('kind = "adult"', 'kind = "adult"\nallow_training = "yes"'),
        ["profiles.parent.allow_training", "true or false"],
    ),
    ("missing kind", BASE.replace('kind = "child"\n', ""), ["profiles.kid.kind", "missing", '"adult" or "child"']),
    ("bad kind", BASE.replace('kind = "child"', 'kind = "teen"'), ["profiles.kid.kind", "'teen'", '"child"']),
    ("bad profile name", BASE.replace("[profiles.kid]", "[profiles.Kid]"), ["profiles.Kid", "lowercase"]),
    ("no profiles", BASE.split("[profiles.parent]")[0], ["[profiles] is empty"]),
    ("profile not a table", BASE.split("[profiles.parent]")[0] + "[profiles]\nkid = 3\n", ["profiles.kid", "a table"]),
    ("bad mode", BASE.replace('mode = "wake"', 'mode = "vox"'), ["trigger.mode", "'vox'", '"wake" or "push_to_talk" or "always"']),
    ("wake without phrase", BASE.replace('wake_phrase = "라디오"', 'wake_phrase = ""'), ["trigger.wake_phrase", "required"]),
    ("grammar not a list", BASE.replace('grammar = ["메시지", "위치"]', 'grammar = "메시지"'), ["trigger.grammar", "a list"]),
    ("grammar with empty phrase", BASE.replace('["메시지", "위치"]', '["메시지", ""]'), ["trigger.grammar[1]", "non-empty"]),
    ("grammar with a number", BASE.replace('["메시지", "위치"]', '["메시지", 3]'), ["trigger.grammar[1]"]),
    ("grammar repeats", BASE.replace('["메시지", "위치"]', '["메시지", "메시지"]'), ["trigger.grammar", "distinct"]),
    (
        "silence_end too short",
        BASE.replace('mode = "wake"', 'mode = "wake"\nsilence_end = "10ms"'),
        ["trigger.silence_end", "200ms to 10s"],
    ),
    ("max_session too long", BASE.replace('mode = "wake"', 'mode = "wake"\nmax_session = "2h"'), ["trigger.max_session", "1s to 10m"]),
    (
        "vad out of range",
        BASE.replace('mode = "wake"', 'mode = "wake"\nvad_aggressiveness = 5'),
        ["trigger.vad_aggressiveness", "0, 1, 2 or 3"],
    ),
    ("sample rate text", BASE.replace("sample_rate = 16000", 'sample_rate = "16k"'), ["device.sample_rate", "a whole number"]),
    ("sample rate unsupported", BASE.replace("sample_rate = 16000", "sample_rate = 12345"), ["device.sample_rate", "16000", "48000"]),
    ("sample rate is a bool", BASE.replace("sample_rate = 16000", "sample_rate = true"), ["device.sample_rate"]),
    ("file vault without path", BASE.replace('backend = "keyring"', 'backend = "file"'), ["vault.path", "required"]),
    (
        "path without file vault",
        BASE.replace('backend = "keyring"', 'backend = "keyring"\npath = "k"'),
        ["vault.path", 'only used when backend = "file"'],
    ),
    ("bad vault", BASE.replace('backend = "keyring"', 'backend = "cloud"'), ["vault.backend", '"keyring" or "file" or "tpm"']),
    (
        "tpm with a path",
        BASE.replace('backend = "keyring"', 'backend = "tpm"\npath = "root.key"'),
        ["vault.path = 'root.key' is not allowed", 'only used when backend = "file"'],
    ),
    (
        "unknown active profile",
        BASE.replace("[household]", '[household]\nactive_profile = "grandma"'),
        ["household.active_profile", "'grandma'", "parent, kid"],
    ),
    (
        "inactive_after zero",
        BASE.replace('keep_audio = "24h"', 'keep_audio = "24h"\ninactive_after = "0s"'),
        ["profiles.parent.inactive_after"],
    ),
    ("section is a value", "household = 3\n" + BASE.replace("[household]\n", ""), ["household = 3", "a table"]),
    ("not TOML", "this is not = = toml\n", ["is not valid TOML", "line 1"]),
    (
        "wake confidence above 1",
        BASE.replace('mode = "wake"', 'mode = "wake"\nwake_confidence = 1.5'),
        ["trigger.wake_confidence", "from 0 to 1"],
    ),
    (
        "child above the audio cap",
        BASE.replace('keep_audio = "1h"', 'keep_audio = "48h"'),
        ["profiles.kid.keep_audio = '48h'", "household.max_child_audio = '1d' (the default)"],
    ),
    (
        "child above a lowered cap",
        BASE.replace("[household]", '[household]\nmax_child_transcript = "1d"'),
        ["profiles.kid.keep_transcript = '7d'", "household.max_child_transcript = '1d', the most"],
    ),
    ("vault backend typo", BASE.replace('backend = "keyring"', 'backend = "fil"'), ["vault.backend = 'fil'", 'did you mean "file"?']),
    ("sweep too slow", BASE + '\n[retention]\nsweep = "2h"\n', ["retention.sweep", "1s to 1h"]),
    ("unknown retention key", BASE + '\n[retention]\nsweap = "1m"\n', ["retention.sweap", "sweep"]),
    (
        "wyoming over tcp",
        BASE + '\n[[wyoming]]\nuri = "tcp://0.0.0.0:10300"\n',
        ["wyoming[0].uri", "systemd-socket-proxyd", "install.sh --wyoming"],
    ),
    ("wyoming relative socket", BASE + '\n[[wyoming]]\nuri = "unix://edge.sock"\n', ["wyoming[0].uri", "unix:///ABSOLUTE/PATH.sock"]),
    ("wyoming without uri", BASE + '\n[[wyoming]]\nname = "edge"\n', ["wyoming[0].uri is missing"]),
    ("wyoming unknown key", BASE + '\n[[wyoming]]\nuri = "stdio://"\nprofil = "kid"\n', ["wyoming[0].profil", "name, profile, uri"]),
    ("wyoming unknown profile", BASE + '\n[[wyoming]]\nuri = "stdio://"\nprofile = "nan"\n', ["wyoming[0].profile", "parent, kid"]),
    ("wyoming not a table", BASE.replace("[device]", 'wyoming = ["stdio://"]\n[device]'), ["wyoming[0]", "[[wyoming]]"]),
    ("wyoming stdio twice", BASE + '\n[[wyoming]]\nuri = "stdio://"\n[[wyoming]]\nuri = "stdio://"\n', ["stdio://", "more than once"]),
    (
        "wyoming socket twice",
        BASE + '\n[[wyoming]]\nuri = "unix:///run/w.sock"\n[[wyoming]]\nuri = "unix:///run/w.sock"\nprofile = "kid"\n',
        ["/run/w.sock", "more than once"],
    ),
    (
        "wyoming on the control socket",
        BASE.replace("sample_rate = 16000", 'sample_rate = 16000\ncontrol_socket = "/run/edge/c.sock"')
        + '\n[[wyoming]]\nuri = "unix:///run/edge/c.sock"\n',
        ["control socket", "can forget data"],
    ),
]


@pytest.mark.parametrize("name,text,expected", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_file_key_and_allowed_values(tmp_path, name, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found. `.*edge-agent init FOLDER` writes a household config"):
        load_config(tmp_path / "nope.toml")


def test_config_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_config_not_utf8(tmp_path):
    path = tmp_path / "household.toml"
    path.write_bytes(b"\xff\xfe[device]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


@pytest.mark.parametrize("name,text,expected", BAD_CONFIGS[:4], ids=[c[0] for c in BAD_CONFIGS[:4]])
def test_cli_reports_config_errors_without_traceback(tmp_path, speech, name, text, expected):
    path = write(tmp_path, text)
    result = edge_agent("--config", str(path), "run", "--input", str(speech.say("메시지")))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("edge-agent: " + str(path))
    assert expected[0] in result.stderr
    assert result.stdout == ""


def test_edge_config_environment_variable(tmp_path, speech):
    path = write(tmp_path, BASE.replace('mode = "wake"', 'mode = "vox"'))
    result = edge_agent("run", "--input", str(speech.say("메시지")), env={"EDGE_CONFIG": str(path)})
    assert result.returncode == 1 and "trigger.mode" in result.stderr


def test_a_minimal_config_says_what_it_misses_not_what_it_never_wrote(tmp_path):
    path = tmp_path / "household.toml"
    path.write_text('[device]\ndata_dir = "data"\n\n[profiles.parent]\nkind = "adult"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "[trigger] wake_phrase is missing" in message and 'mode = "always"' in message and "''" not in message
    path.write_text(path.read_text() + '\n[trigger]\nmode = "always"\n', encoding="utf-8")
    assert load_config(path).trigger.mode == "always"  # every other key has its default


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('forget_last = "메시지"', "voice_commands.forget_last = '메시지' is not allowed; use a phrase no other command, the wake phrase"),
        ('forget_last = "a  b"\nforget_today = "a b"', "voice_commands.forget_today = 'a b' is not allowed; use a phrase no other"),
        ('guest_on = "게스트 모드"', "voice_commands.guest_off = '' is not allowed; use a phrase: guest_on and guest_off go together"),
        ('confirm = "네"', "voice_commands.confirm = '네' is not allowed; use \"\" (no confirmation)"),
        ('forget_last = "a"\nconfirm_window = "5m"', "voice_commands.confirm_window = '5m' is not allowed; use a duration from 2s to 1m"),
        (
            'guest_on = "a"\nguest_off = "b"\nguest_limit = "2d"',
            "voice_commands.guest_limit = '2d' is not allowed; use a duration from 1m to 24h",
        ),
        ("forget_today = 3", "voice_commands.forget_today = 3 is not allowed; use a string"),
        (
            'forget_now = "a"',
            "unknown key 'voice_commands.forget_now' in [voice_commands]; the keys allowed there are: confirm, confirm_window",
        ),
    ],
)
def test_voice_commands_are_refused_naming_the_key_and_what_is_allowed(tmp_path, table, said):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BASE + "\n[voice_commands]\n" + table + "\n"))
    assert str(caught.value).startswith(f"{tmp_path / 'household.toml'}: "), str(caught.value)
    assert said in str(caught.value), str(caught.value)


def test_voice_commands_are_off_unless_a_phrase_is_set(tmp_path):
    assert not load_config(write(tmp_path, BASE)).voice_commands.enabled
    spoken = load_config(write(tmp_path, BASE + '\n[voice_commands]\nforget_last = " 마지막  기록 지워 "\n')).voice_commands
    assert spoken.enabled and spoken.phrases() == {"forget_last": "마지막 기록 지워"}  # as the recognizer writes words
