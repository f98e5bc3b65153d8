"""The store master CSV: quoted commas, lookups and malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.store_master import Store, StoreMasterError, load_store_master

REPO_STORES = Path(__file__).resolve().parents[3] / "stores.csv"


def test_quoted_commas_are_part_of_the_name(stores_csv: Path) -> None:
    master = load_store_master(stores_csv)
    assert master.get("RP00893") == Store("RP00893", "A.A ENTP,", "7000129")
    assert master.get("S01408764") == Store("S01408764", "SUN, MOON & STARS KIRANA", "7100017")
    assert len(master) == 5
    assert master.get("NOPE") is None


def test_bundled_store_master_has_the_sample_payload_stores() -> None:
    master = load_store_master(REPO_STORES)
    assert "S00339218" in master
    assert "S01408764" in master


def test_byte_order_mark_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffAreaCode,StoreName,StoreID\r\n1,A,S1\r\n\r\n2,B,S2\r\n".encode())
    master = load_store_master(path)
    assert master.get("S2") == Store("S2", "B", "2")


def test_columns_may_come_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "reordered.csv"
    path.write_text('StoreID,AreaCode,StoreName\nS1,7,"X, Y"\n')
    assert load_store_master(path).get("S1") == Store("S1", "X, Y", "7")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("Area,Name,Id\n1,A,B\n", "expected columns AreaCode,StoreName,StoreID"),
        ("AreaCode,StoreName,StoreID\n", "has no stores"),
        ("AreaCode,StoreName,StoreID\n1,A,S1,extra\n", "line 2: expected 3 fields, found 4"),
        ("AreaCode,StoreName,StoreID\n1,A,\n", "line 2: empty StoreID"),
    ],
)
def test_malformed_files_fail_with_a_one_line_reason(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "stores.csv"
    path.write_text(content)
    with pytest.raises(StoreMasterError) as caught:
        load_store_master(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreMasterError, match="store master not found"):
        load_store_master(tmp_path / "absent.csv")


def test_real_master_format_with_quoted_commas_parses(tmp_path: Path) -> None:
    # Lines in the shape of the assignment's 4,944-store master.
    path = tmp_path / "master.csv"
    path.write_text(
        "AreaCode,StoreName,StoreID\n"
        '7000129,"AB AHAD GEN. STORE,-1",RP00894\n'
        '7000129,"AB GANI PROV. STORE,-1",RP00896\n'
    )
    master = load_store_master(path)
    assert master.get("RP00896") == Store("RP00896", "AB GANI PROV. STORE,-1", "7000129")
