"""pre_tag_map loading: bad lines are errors naming file and line (config error at start-up); tag filters."""
from __future__ import annotations

import numpy as np
import pytest

from engine.config import ConfigError, loads_config
from engine.enrich.pretag import load_pretag_map
from engine.enrich.tagfilter import parse_tag_filter, tag_filter_mask
from engine.maps import MapError


@pytest.mark.parametrize("line, what", [
    ("set_tag=1 ip=300.1.1.1", "300.1.1.1"),
    ("set_tag=1 set_label=x ip=0.0.0.0/0", "exactly one"),
    ("set_tag=1 colour=blue", "colour"),
    ("set_tag=1 filter='port smtp'", "port smtp"),
    ("set_tag=1 jeq=nowhere", "nowhere"),
    ("set_label=" + "x" * 40, "longer"),
    ("set_tag=-1", "set_tag"),
])
def test_bad_line_names_file_and_line(tmp_path, line: str, what: str) -> None:
    path = tmp_path / "pretag.map"
    path.write_text(f"! comment\nset_tag=5 ip=192.0.2.1\n{line}\n")
    with pytest.raises(MapError) as err:
        load_pretag_map(str(path))
    assert str(err.value).startswith(f"{path}:3:") and what in str(err.value)


def test_bad_map_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "pretag.map"
    path.write_text("set_tag=1 in=abc\n")
    with pytest.raises(ConfigError) as err:
        loads_config(f"pre_tag_map: {path}\nplugins: print\n")
    assert f"{path}:1" in str(err.value) and "pre_tag_map" in str(err.value)


def test_tag_filter_semantics() -> None:
    tags = np.arange(0, 25, dtype=np.uint64)
    mask = tag_filter_mask(parse_tag_filter("0,10-20,-15"), tags)
    assert tags[mask].tolist() == [0] + [t for t in range(10, 21) if t != 15]
    assert tags[tag_filter_mask(parse_tag_filter("-3"), tags)].tolist() == [t for t in range(25) if t != 3]
    for bad in ("a", "1,,2", "5-2", "1-2-3"):
        with pytest.raises(ValueError):
            parse_tag_filter(bad)
