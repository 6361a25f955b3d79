"""Table and meta-key naming for single sites and multisite blogs."""

from __future__ import annotations

import dataclasses

import pytest

from wp_schema.names import TableNames


def test_main_site_uses_base_prefix_everywhere() -> None:
    n = TableNames()
    assert n.base_prefix == n.blog_prefix == "wp_"
    assert (n.users, n.usermeta, n.options) == ("wp_users", "wp_usermeta", "wp_options")
    assert n.kc("appointments") == "wp_kc_appointments"
    assert n.capabilities_key == "wp_capabilities"
    assert n.user_level_key == "wp_user_level"
    assert n.sidecar("state") == "wp_kcsc_state"
    assert not n.is_multisite_blog


def test_multisite_blog_three_splits_global_and_blog_tables() -> None:
    n = TableNames("clinic_", blog_id=3)
    assert n.blog_prefix == "clinic_3_"
    assert (n.users, n.usermeta) == ("clinic_users", "clinic_usermeta")
    assert n.options == "clinic_3_options"
    assert (
        n.kc("appointment_google_meet_mappings") == "clinic_3_kc_appointment_google_meet_mappings"
    )
    assert n.capabilities_key == "clinic_3_capabilities"
    assert n.user_level_key == "clinic_3_user_level"
    assert n.sidecar("jobs") == "clinic_3_kcsc_jobs"
    assert n.is_multisite_blog


def test_frozen_and_hashable() -> None:
    n = TableNames()
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.prefix = "x_"  # type: ignore[misc]
    assert {n, TableNames("wp_", 1)} == {n}


@pytest.mark.parametrize("prefix", ["", "wp-", "wp ", "wp_;DROP", "wpé_", "w`p"])
def test_bad_prefix_is_rejected_with_a_hint(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"table_prefix"):
        TableNames(prefix)


@pytest.mark.parametrize("blog_id", [0, -1, True, "2"])
def test_bad_blog_id_is_rejected(blog_id: object) -> None:
    with pytest.raises(ValueError, match="blog id"):
        TableNames("wp_", blog_id)  # type: ignore[arg-type]


def test_table_name_parts_are_checked() -> None:
    with pytest.raises(ValueError):
        TableNames().kc("appointments; --")
    with pytest.raises(ValueError):
        TableNames().sidecar("")
