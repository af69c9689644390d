from dataclasses import dataclass, field

import pytest

from ruas_nni.base.config import ConfigError, load_config, read_yaml
from ruas_nni.cli import error_line


@dataclass
class _Example:
    epochs: int = field(default=20, metadata={"min": 1})
    lr: float = 0.005
    strategy: str = field(default="cooperative", metadata={"choices": ("cooperative", "darts")})
    data: list[str] = field(default_factory=list)
    sigma: float | None = None
    flip: bool = True


def test_defaults_file_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlr: 1\ndata: [a, b]\nsigma: 0.1\n")
    config = load_config(_Example, path, {"epochs": 5, "strategy": None})
    assert config == _Example(epochs=5, lr=1.0, data=["a", "b"], sigma=0.1)


@pytest.mark.parametrize("text,message", [
    ("epocs: 3\n", "unknown key 'epocs'; allowed keys: data, epochs, flip, lr, sigma, strategy"),
    ("epochs: three\n", "'epochs' must be an integer, got 'three'"),
    ("strategy: enas\n", "'strategy' must be one of cooperative, darts; got 'enas'"),
    ("epochs: 0\n", "'epochs' must be at least 1"),
    ("flip: 1\n", "'flip' must be true or false"),
    ("data: a\n", "'data' must be a list of a string"),
    ("epochs: [\n", "invalid YAML at line 2"),
    ("- 1\n- 2\n", "expected a mapping"),
])
def test_file_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(_Example, path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_override_errors_name_the_key_and_the_command_line_names_the_flag():
    with pytest.raises(ConfigError, match="^`strategy` must be one of cooperative, darts; got 'enas'$") as info:
        load_config(_Example, None, {"strategy": "enas"})
    assert info.value.keys == ("strategy",)
    assert error_line(info.value) == "--strategy must be one of cooperative, darts; got 'enas'"
    with pytest.raises(ConfigError, match="no such file") as info:
        load_config(_Example, "/nonexistent/c.yaml")
    assert error_line(info.value) == "--config /nonexistent/c.yaml: no such file"


def test_read_yaml_names_the_file_not_a_flag(tmp_path):
    with pytest.raises(ConfigError, match="^/nonexistent/c.yaml: no such file$") as info:
        read_yaml("/nonexistent/c.yaml")
    assert info.value.keys == ()


def test_file_errors_on_the_command_line_name_the_config_flag(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(_Example, path, {"epochs": 3})
    assert error_line(info.value) == f"--config {path}: 'epochs' must be at least 1, got 0"
