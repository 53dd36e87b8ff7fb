

@pytest.mark.parametrize("train_on", ["final", "approved"])
def test_what_trains_by_setting_and_a_double_read_volume_only_once_adjudicated(sessions, ingest, tmp_path,
                                                                               train_on) -> None:
    from db.datastore import SQLDatastore

    submitted, approved, read_twice, adjudicated = ingest(4)
    _label(sessions, submitted, "a")
    _label(sessions, approved, "a")
    with write_session(sessions) as session:
        review_label(session, approved, 1, "approved", "rev")
        set_readers(session, [read_twice, adjudicated], 2, "admin")
    for volume in (read_twice, adjudicated):
        _label(sessions, volume, "a")
        _label(sessions, volume, "b")
    with write_session(sessions) as session:
        record_label(session, adjudicated, "final", "/labels/adjudicated.nii.gz", "rev",
                     meta={"adjudication": {"method": "majority"}})
        review_label(session, adjudicated, 3, "approved", "rev", may_review_own=True)
    datastore = SQLDatastore(sessions, tmp_path, tmp_path, {1, 2}, train_on=train_on)
    trains = {pair["id"]: pair["label"] for pair in datastore.datalist()}
    expected = {approved: f"/labels/{approved}.a.nii.gz", adjudicated: "/labels/adjudicated.nii.gz"}
    if train_on == "final":
        expected[submitted] = f"/labels/{submitted}.a.nii.gz"
    assert trains == expected
