//! What owners use, as the job store counts it (migration 0002's triggers), and admission under
//! the caps, on SQLite and PostgreSQL: exact however many processes admit at once.
use std::sync::Arc;
use thumbnail_core::jobstore::{Caps, DynJobStore, Outcome, OwnerUsage, Refusal};
use thumbnail_core::model::{JobError, JobOutput};
use thumbnail_core::testsupport::{Backend, TestJobStore, sample_job};

fn output(bytes: u64) -> JobOutput {
    JobOutput {
        name: "default".into(),
        bucket: "b".into(),
        key: "k".into(),
        width: 1,
        height: 1,
        bytes,
        content_type: "image/jpeg".into(),
        sha256: "0".repeat(64),
    }
}

fn usage(unfinished_jobs: u64, stored_bytes: u64) -> OwnerUsage {
    OwnerUsage {
        unfinished_jobs,
        stored_bytes,
    }
}

/// Every write that changes an owner's usage is counted: a new job (its original), a start (no
/// change), a success (its thumbnails), a failure, a removal; jobs without an owner count for
/// nobody.
async fn usage_follows_every_write(backend: Backend) {
    let store = TestJobStore::new(backend).await;
    let mut job = sample_job(Some("alice"));
    job.source_bytes = 1000;
    let a = store.create(&job).await.unwrap();
    assert_eq!(store.usage("alice").await.unwrap(), usage(1, 1000));
    let mut other = sample_job(Some("alice"));
    other.source_bytes = 500;
    let b = store.create(&other).await.unwrap();
    store.create(&sample_job(None)).await.unwrap();
    assert_eq!(store.usage("alice").await.unwrap(), usage(2, 1500));

    let started = store.start(a.id).await.unwrap().unwrap();
    assert_eq!(store.usage("alice").await.unwrap(), usage(2, 1500));
    let success = Outcome::Success(vec![output(70), output(30)]);
    assert!(store.finish(a.id, started.attempts, &success).await.unwrap());
    assert_eq!(store.usage("alice").await.unwrap(), usage(1, 1600));
    // A second finish does not land and changes nothing.
    assert!(!store.finish(a.id, started.attempts, &success).await.unwrap());
    assert_eq!(store.usage("alice").await.unwrap(), usage(1, 1600));

    let started = store.start(b.id).await.unwrap().unwrap();
    let failure = Outcome::Failure(JobError {
        reason: "CorruptImage".into(),
        message: "x".into(),
    });
    assert!(store.finish(b.id, started.attempts, &failure).await.unwrap());
    assert_eq!(store.usage("alice").await.unwrap(), usage(0, 1600));
    assert!(store.delete(a.id).await.unwrap());
    assert_eq!(store.usage("alice").await.unwrap(), usage(0, 500));
    assert_eq!(store.usage("nobody").await.unwrap(), OwnerUsage::default());
}

#[tokio::test]
async fn usage_follows_every_write_on_sqlite() {
    usage_follows_every_write(Backend::Embedded).await;
}

#[tokio::test]
async fn usage_follows_every_write_on_postgres() {
    usage_follows_every_write(Backend::Server).await;
}

/// Each cap refuses with what it counted, and a refused job is not stored.
async fn admission_refuses_at_each_cap(backend: Backend) {
    let store = TestJobStore::new(backend).await;
    let caps = Caps {
        max_queued_jobs: 3,
        max_unfinished_per_owner: 2,
        max_stored_bytes_per_owner: 2500,
    };
    let mut job = sample_job(Some("alice"));
    job.source_bytes = 1000;
    assert!(store.admit(&job, &caps).await.unwrap().is_ok());
    let mut job = sample_job(Some("alice"));
    job.source_bytes = 1000;
    assert!(store.admit(&job, &caps).await.unwrap().is_ok());
    let mut third = sample_job(Some("alice"));
    third.source_bytes = 1;
    assert_eq!(
        store.admit(&third, &caps).await.unwrap(),
        Err(Refusal::TooManyUnfinished {
            unfinished: 2,
            max: 2
        })
    );
    assert!(store.get(third.id).await.unwrap().is_none());

    let mut big = sample_job(Some("bob"));
    big.source_bytes = 2501;
    assert_eq!(
        store.admit(&big, &caps).await.unwrap(),
        Err(Refusal::StorageFull {
            stored: 0,
            incoming: 2501,
            max: 2500
        })
    );
    // Jobs without an owner meet only the queue's cap.
    let mut anonymous = sample_job(None);
    anonymous.source_bytes = u64::MAX >> 2;
    assert!(store.admit(&anonymous, &caps).await.unwrap().is_ok());
    assert_eq!(
        store.admit(&sample_job(Some("carol")), &caps).await.unwrap(),
        Err(Refusal::QueueFull { queued: 3, max: 3 })
    );
    assert_eq!(
        store.admit(&sample_job(None), &caps).await.unwrap(),
        Err(Refusal::QueueFull { queued: 3, max: 3 })
    );
    // No caps: admitted.
    assert!(
        store
            .admit(&sample_job(Some("alice")), &Caps::default())
            .await
            .unwrap()
            .is_ok()
    );
}

#[tokio::test]
async fn admission_refuses_at_each_cap_on_sqlite() {
    admission_refuses_at_each_cap(Backend::Embedded).await;
}

#[tokio::test]
async fn admission_refuses_at_each_cap_on_postgres() {
    admission_refuses_at_each_cap(Backend::Server).await;
}

/// Two processes (two connections with pools of their own) admitting 24 jobs of one owner at
/// once, with a cap of 5 unfinished: exactly 5 are admitted.
async fn concurrent_admissions_never_pass_the_cap(backend: Backend) {
    let store = TestJobStore::new(backend).await;
    let replicas: [DynJobStore; 2] = [store.reconnect().await, store.reconnect().await];
    let caps = Arc::new(Caps {
        max_queued_jobs: 0,
        max_unfinished_per_owner: 5,
        max_stored_bytes_per_owner: 0,
    });
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (replica, caps) = (replicas[i % 2].clone(), caps.clone());
        tasks.push(tokio::spawn(async move {
            replica
                .admit(&sample_job(Some("alice")), &caps)
                .await
                .unwrap()
                .is_ok()
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 5);
    assert_eq!(store.usage("alice").await.unwrap().unfinished_jobs, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admissions_never_pass_the_cap_on_sqlite() {
    concurrent_admissions_never_pass_the_cap(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admissions_never_pass_the_cap_on_postgres() {
    concurrent_admissions_never_pass_the_cap(Backend::Server).await;
}

/// Jobs stored before migration 0002 are counted when it runs: its backfill.
#[tokio::test]
async fn the_migration_counts_jobs_stored_before_it() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        let first = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_jobs.sql"
        ))
        .unwrap();
        sqlx::raw_sql(&first).execute(&mut conn).await.unwrap();
        // What sqlx's migrator would have recorded for 0001, so that it applies only 0002.
        let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite"
        )))
        .await
        .unwrap();
        let m = migrator.iter().next().unwrap();
        sqlx::raw_sql(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, 1, ?, 0)")
            .bind(m.version)
            .bind(&*m.description)
            .bind(&*m.checksum)
            .execute(&mut conn)
            .await
            .unwrap();
        for (id, status, outputs) in [
            ("00000000-0000-0000-0000-000000000001", "PENDING", "[]"),
            (
                "00000000-0000-0000-0000-000000000002",
                "SUCCESS",
                r#"[{"name":"default","bucket":"b","key":"k","width":1,"height":1,"bytes":40,"content_type":"image/png","sha256":"x"}]"#,
            ),
        ] {
            sqlx::query(
                "INSERT INTO jobs (id, status, owner, source_bucket, source_key, source_format, source_width, \
                 source_height, source_bytes, outputs_requested, outputs, created_at) \
                 VALUES (?, ?, 'alice', 'b', 'k', 'png', 1, 1, 100, '[]', ?, 1)",
            )
            .bind(id)
            .bind(status)
            .bind(outputs)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let _ = conn.close().await;
    }
    let store = thumbnail_core::jobstore::connect(&url, 1).await.unwrap();
    assert_eq!(store.usage("alice").await.unwrap(), usage(1, 240));
}
