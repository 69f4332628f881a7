"""Terminal wording helpers."""

from optembed_cli.ui import size_change


def test_size_change_says_smaller_or_larger() -> None:
    assert size_change(1000, 250) == "4.0x smaller than"
    assert size_change(700, 1000) == "1.4x larger than"
    assert size_change(1000, 1020) == "about the same size as"
    assert size_change(1000, 0) == "of unknown relative size"


def test_version_option(cli) -> None:
    from optembed import __version__

    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"optembed {__version__}"
