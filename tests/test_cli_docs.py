"""docs/cli.md is generated from the commands' --help and must not drift from them."""

from __future__ import annotations

from advisor import cli_docs


def test_the_cli_page_is_current():
    assert cli_docs.main(["--check"]) == 0, "docs/cli.md is stale: run `make cli-docs`"


def test_the_page_holds_every_command_and_option():
    text = cli_docs.render()
    for command in ("recommend", "sweep", "gate", "export", "seed", "registry versions"):
        assert f"`advisor {command}`" in text
    assert "--memory SIZE" in text and "--debug" in text


def test_a_stale_page_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_docs, "PAGE", tmp_path / "cli.md")
    (tmp_path / "cli.md").write_text("old\n")
    assert cli_docs.main(["--check"]) == 1
    assert "is stale: run `make cli-docs`" in capsys.readouterr().err
    assert cli_docs.main([]) == 0 and cli_docs.main(["--check"]) == 0
