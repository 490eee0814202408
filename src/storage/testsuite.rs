//! The one suite every storage driver must pass (distribution's
//! `storage/driver/testsuites`). Call [`run_all`] with a fresh, empty driver.

use bytes::Bytes;
use futures::{future::join_all, StreamExt};

use super::{ByteStream, Resume, StorageDriver};

async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("read chunk"));
    }
    out
}

/// Run every check; panics with the failing check's message.
pub async fn run_all(d: &dyn StorageDriver) {
    content_round_trip(d).await;
    missing_paths(d).await;
    ranged_reads(d).await;
    resumable_writer(d).await;
    resumed_large_writes(d).await;
    listing(d).await;
    rename_and_delete(d).await;
    invalid_paths(d).await;
    concurrent_writes(d).await;
    large_object(d).await;
    object_stat(d).await;
    fresh_writer(d).await;
    resume_writer(d).await;
    staged_writer(d).await;
    delete_known(d).await;
    commit_elsewhere(d).await;
}

async fn content_round_trip(d: &dyn StorageDriver) {
    d.put_content("/suite/content/a", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(d.get_content("/suite/content/a").await.unwrap(), "one");
    d.put_content("/suite/content/a", Bytes::from_static(b"two!"))
        .await
        .unwrap();
    assert_eq!(d.get_content("/suite/content/a").await.unwrap(), "two!");
    let info = d.stat("/suite/content/a").await.unwrap();
    assert_eq!((info.size, info.is_dir), (4, false));
    assert!(d.stat("/suite/content").await.unwrap().is_dir);
    d.put_content("/suite/content/empty", Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        d.get_content("/suite/content/empty").await.unwrap().len(),
        0
    );
}

async fn missing_paths(d: &dyn StorageDriver) {
    assert!(d
        .get_content("/suite/missing")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(d.stat("/suite/missing").await.unwrap_err().is_not_found());
    assert!(d.list("/suite/missing").await.unwrap_err().is_not_found());
    assert!(d.delete("/suite/missing").await.unwrap_err().is_not_found());
    assert!(d
        .reader("/suite/missing", 0, None)
        .await
        .err()
        .unwrap()
        .is_not_found());
    assert!(d
        .rename("/suite/missing", "/suite/x")
        .await
        .unwrap_err()
        .is_not_found());
}

async fn ranged_reads(d: &dyn StorageDriver) {
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    d.put_content("/suite/range/obj", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        collect(d.reader("/suite/range/obj", 0, None).await.unwrap()).await,
        data
    );
    assert_eq!(
        collect(d.reader("/suite/range/obj", 100, Some(50)).await.unwrap()).await,
        &data[100..150]
    );
    assert_eq!(
        collect(d.reader("/suite/range/obj", 9_990, None).await.unwrap()).await,
        &data[9_990..]
    );
    assert_eq!(
        collect(
            d.reader("/suite/range/obj", 9_990, Some(100))
                .await
                .unwrap()
        )
        .await,
        &data[9_990..]
    );
    assert!(
        collect(d.reader("/suite/range/obj", 10_000, None).await.unwrap())
            .await
            .is_empty()
    );
    assert!(d.reader("/suite/range/obj", 10_001, None).await.is_err());
}

async fn resumable_writer(d: &dyn StorageDriver) {
    let p = "/suite/writer/data";
    assert_eq!(d.stored_size(p).await.unwrap(), None);
    let mut w = d.writer(p, 0).await.unwrap();
    w.write(Bytes::from_static(b"hello ")).await.unwrap();
    assert_eq!(w.size(), 6);
    assert_eq!(w.close().await.unwrap(), 6);
    // What a resuming writer would start from: what `close` kept.
    assert_eq!(d.stored_size(p).await.unwrap(), Some(6));
    // Resume at the end, as the next PATCH on another replica would.
    let mut w = d.writer(p, 6).await.unwrap();
    w.write(Bytes::from_static(b"wor")).await.unwrap();
    assert_eq!(w.close().await.unwrap(), 9);
    assert_eq!(d.stored_size(p).await.unwrap(), Some(9));
    let mut w = d.writer(p, 9).await.unwrap();
    w.write(Bytes::from_static(b"ld")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 11);
    assert_eq!(d.get_content(p).await.unwrap(), "hello world");
    assert_eq!(d.stat(p).await.unwrap().size, 11);
    // Resuming at an earlier offset discards what came after it (a retried chunk).
    let p = "/suite/writer/retried";
    let mut w = d.writer(p, 0).await.unwrap();
    w.write(Bytes::from_static(b"hello world")).await.unwrap();
    w.close().await.unwrap();
    let mut w = d.writer(p, 6).await.unwrap();
    w.write(Bytes::from_static(b"there")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(d.get_content(p).await.unwrap(), "hello there");
    assert!(
        d.writer(p, 100).await.is_err(),
        "offset past the end is refused"
    );
    assert_eq!(
        d.get_content(p).await.unwrap(),
        "hello there",
        "a refused writer changes nothing"
    );
}

async fn listing(d: &dyn StorageDriver) {
    for name in ["b", "a", "c/deep", "d/x/y"] {
        d.put_content(&format!("/suite/list/{name}"), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let got = d.list("/suite/list").await.unwrap();
    assert_eq!(
        got,
        [
            "/suite/list/a",
            "/suite/list/b",
            "/suite/list/c",
            "/suite/list/d"
        ]
    );
    assert_eq!(d.list("/suite/list/d").await.unwrap(), ["/suite/list/d/x"]);
    let many: Vec<String> = (0..1200).map(|i| format!("/suite/many/{i:05}")).collect();
    join_all(
        many.iter()
            .map(|p| d.put_content(p, Bytes::from_static(b"m"))),
    )
    .await;
    assert_eq!(
        d.list("/suite/many").await.unwrap(),
        many,
        "listing is complete past any page size"
    );
}

async fn rename_and_delete(d: &dyn StorageDriver) {
    d.put_content("/suite/mv/src", Bytes::from_static(b"moved"))
        .await
        .unwrap();
    d.put_content("/suite/mv/dst/old", Bytes::from_static(b"old"))
        .await
        .unwrap();
    d.rename("/suite/mv/src", "/suite/mv/new/place")
        .await
        .unwrap();
    assert!(d.stat("/suite/mv/src").await.unwrap_err().is_not_found());
    assert_eq!(d.get_content("/suite/mv/new/place").await.unwrap(), "moved");
    d.put_content("/suite/mv/src2", Bytes::from_static(b"replace"))
        .await
        .unwrap();
    d.rename("/suite/mv/src2", "/suite/mv/dst/old")
        .await
        .unwrap();
    assert_eq!(d.get_content("/suite/mv/dst/old").await.unwrap(), "replace");
    d.delete("/suite/mv").await.unwrap();
    assert!(d
        .stat("/suite/mv/dst/old")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(d.stat("/suite/mv").await.unwrap_err().is_not_found());
}

async fn invalid_paths(d: &dyn StorageDriver) {
    for bad in ["relative", "/a/../b", "/a//b", "/a/./b", "/trailing/"] {
        assert!(
            d.put_content(bad, Bytes::from_static(b"x")).await.is_err(),
            "{bad}"
        );
        assert!(d.get_content(bad).await.is_err(), "{bad}");
    }
}

async fn resumed_large_writes(d: &dyn StorageDriver) {
    // Large objects written across several resumed writers, as a chunked
    // upload spread over replicas writes them.
    let part = Bytes::from(vec![3u8; 6 * 1024 * 1024]);
    let p = "/suite/writer/parts";
    let mut offset = 0;
    for i in 0..3 {
        let mut w = d.writer(p, offset).await.unwrap();
        w.write(part.clone()).await.unwrap();
        w.write(Bytes::from_static(b"tail")).await.unwrap();
        offset = if i < 2 {
            let size = w.close().await.unwrap();
            assert_eq!(d.stored_size(p).await.unwrap(), Some(size), "writer {i}");
            size
        } else {
            w.commit().await.unwrap()
        };
    }
    assert_eq!(offset, 3 * (6 * 1024 * 1024 + 4));
    assert_eq!(d.stat(p).await.unwrap().size, offset);
}

async fn concurrent_writes(d: &dyn StorageDriver) {
    // Many writers of one path: the result is one whole value, never a mix.
    let values: Vec<Bytes> = (0..16u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
    join_all(
        values
            .iter()
            .map(|v| d.put_content("/suite/race/obj", v.clone())),
    )
    .await;
    let got = d.get_content("/suite/race/obj").await.unwrap();
    assert_eq!(got.len(), 64 * 1024);
    assert!(got.iter().all(|b| *b == got[0]), "torn write");
}

async fn large_object(d: &dyn StorageDriver) {
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let mut w = d.writer("/suite/large/data", 0).await.unwrap();
    for _ in 0..24 {
        w.write(chunk.clone()).await.unwrap();
    }
    assert_eq!(w.commit().await.unwrap(), 24 * 1024 * 1024);
    let info = d.stat("/suite/large/data").await.unwrap();
    assert_eq!(info.size, 24 * 1024 * 1024);
    let mut total = 0usize;
    let mut s = d.reader("/suite/large/data", 0, None).await.unwrap();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        assert!(c.iter().all(|b| *b == 7));
        total += c.len();
    }
    assert_eq!(total, 24 * 1024 * 1024);
}

async fn object_stat(d: &dyn StorageDriver) {
    d.put_content("/suite/objstat/dir/obj", Bytes::from_static(b"12345"))
        .await
        .unwrap();
    let info = d.stat_object("/suite/objstat/dir/obj").await.unwrap();
    assert_eq!((info.size, info.is_dir), (5, false));
    for missing in ["/suite/objstat/dir/nothing", "/suite/objstat/dir"] {
        assert!(
            d.stat_object(missing).await.unwrap_err().is_not_found(),
            "{missing}: not an object"
        );
    }
}

async fn fresh_writer(d: &dyn StorageDriver) {
    for (p, len) in [("/suite/fresh/small", 3), ("/suite/fresh/large", 7 << 20)] {
        assert_eq!(d.stored_size(p).await.unwrap(), None);
        let first = Bytes::from(vec![5u8; len]);
        let mut w = d.fresh_writer(p).await.unwrap();
        w.write(first.clone()).await.unwrap();
        assert_eq!(w.close().await.unwrap(), len as u64);
        assert_eq!(d.stored_size(p).await.unwrap(), Some(len as u64), "{p}");
        let mut w = d.writer(p, len as u64).await.unwrap();
        w.write(Bytes::from_static(b"end")).await.unwrap();
        assert_eq!(w.commit().await.unwrap(), len as u64 + 3);
        let got = collect(d.reader(p, 0, None).await.unwrap()).await;
        assert!(got[..len] == first[..] && got.ends_with(b"end"), "{p}");
    }
    // Committed by the fresh writer itself (a whole blob in one PUT).
    let mut w = d.fresh_writer("/suite/fresh/once").await.unwrap();
    w.write(Bytes::from_static(b"once")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 4);
    assert_eq!(d.get_content("/suite/fresh/once").await.unwrap(), "once");
}

async fn resume_writer(d: &dyn StorageDriver) {
    let p = "/suite/resume/data";
    let elsewhere = |r: Resume| match r {
        Resume::Elsewhere(at) => at,
        Resume::Writer(_) => panic!("a writer at the wrong offset"),
    };
    assert_eq!(elsewhere(d.resume_writer(p, 3).await.unwrap()), None);
    let mut w = d.writer(p, 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.close().await.unwrap();
    for wrong in [2, 4] {
        assert_eq!(elsewhere(d.resume_writer(p, wrong).await.unwrap()), Some(3));
    }
    assert_eq!(d.stored_size(p).await.unwrap(), Some(3), "nothing touched");
    let Resume::Writer(mut w) = d.resume_writer(p, 3).await.unwrap() else {
        panic!("no writer where the object stands");
    };
    assert_eq!(w.size(), 3);
    w.write(Bytes::from_static(b"def")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 6);
    assert_eq!(d.get_content(p).await.unwrap(), "abcdef");
}

/// Drivers that stage in place: invisible until `commit`, gone on `abort`.
async fn staged_writer(d: &dyn StorageDriver) {
    let p = "/suite/staged/small";
    let Some(mut w) = d.staged_writer(p).await.unwrap() else {
        return;
    };
    w.write(Bytes::from_static(b"sta")).await.unwrap();
    w.write(Bytes::from_static(b"ged")).await.unwrap();
    assert_eq!(w.size(), 6);
    assert!(d.stat_object(p).await.unwrap_err().is_not_found());
    assert_eq!(w.commit().await.unwrap(), 6);
    assert_eq!(d.get_content(p).await.unwrap(), "staged");
    let w = d
        .staged_writer("/suite/staged/empty")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.commit().await.unwrap(), 0);
    assert_eq!(d.stat_object("/suite/staged/empty").await.unwrap().size, 0);

    // Several parts' worth, committed.
    let big: Vec<u8> = (0..=250u8).cycle().take(12 * 1024 * 1024 + 7).collect();
    let p = "/suite/staged/large";
    let mut w = d.staged_writer(p).await.unwrap().unwrap();
    for piece in big.chunks(1024 * 1024) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert!(d.stat_object(p).await.unwrap_err().is_not_found());
    assert_eq!(w.commit().await.unwrap(), big.len() as u64);
    assert!(collect(d.reader(p, 0, None).await.unwrap()).await == big);

    // Aborted, small and large: nothing new, and an object there stays.
    for (p, len) in [
        ("/suite/staged/gone", 10),
        ("/suite/staged/small", 11 << 20),
    ] {
        let before = d.get_content(p).await.ok();
        let mut w = d.staged_writer(p).await.unwrap().unwrap();
        w.write(Bytes::from(vec![1u8; len])).await.unwrap();
        w.abort().await;
        assert_eq!(d.get_content(p).await.ok(), before, "{p}");
    }
    assert!(d
        .stat_object("/suite/staged/gone")
        .await
        .unwrap_err()
        .is_not_found());
}

async fn delete_known(d: &dyn StorageDriver) {
    let dir = "/suite/known/u1";
    for name in ["startedat", "data"] {
        d.put_content(&format!("{dir}/{name}"), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    d.delete_known(dir, &["startedat", "data"]).await.unwrap();
    assert!(d.stat(dir).await.unwrap_err().is_not_found());
    // Already gone: no error.
    d.delete_known(dir, &["startedat"]).await.unwrap();
}

/// `commit_to`: the object ends whole at the destination (replacing what
/// was there) or, where the driver says it could not, at the writer's path;
/// never half at both, and the upload's state is gone either way.
async fn commit_elsewhere(d: &dyn StorageDriver) {
    let dest = "/suite/elsewhere/blob";
    d.put_content(dest, Bytes::from_static(b"old"))
        .await
        .unwrap();
    // Small, resumed once (as a PATCH then the final PUT).
    let p = "/suite/elsewhere/upload/data";
    let mut w = d.writer(p, 0).await.unwrap();
    w.write(Bytes::from_static(b"hello ")).await.unwrap();
    w.close().await.unwrap();
    let mut w = d.writer(p, 6).await.unwrap();
    w.write(Bytes::from_static(b"world")).await.unwrap();
    let (size, moved) = w.commit_to(dest).await.unwrap();
    assert_eq!(size, 11);
    let at = if moved { dest } else { p };
    assert_eq!(d.get_content(at).await.unwrap(), "hello world");
    if moved {
        assert!(d.stat_object(p).await.unwrap_err().is_not_found());
        assert_eq!(d.stored_size(p).await.unwrap(), None, "no state left");
    } else {
        assert_eq!(d.get_content(dest).await.unwrap(), "old");
    }
    // Large (past any part size): wherever it went, it is whole.
    let p = "/suite/elsewhere/large/data";
    let chunk = Bytes::from(vec![3u8; 1024 * 1024]);
    let mut w = d.writer(p, 0).await.unwrap();
    for _ in 0..12 {
        w.write(chunk.clone()).await.unwrap();
    }
    let dest = "/suite/elsewhere/large-blob";
    let (size, moved) = w.commit_to(dest).await.unwrap();
    assert_eq!(size, 12 * 1024 * 1024);
    let at = if moved { dest } else { p };
    assert_eq!(d.stat_object(at).await.unwrap().size, size);
    assert_eq!(
        collect(d.reader(at, size - 4, None).await.unwrap()).await,
        [3u8; 4]
    );
}
