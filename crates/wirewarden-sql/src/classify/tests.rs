use super::*;

fn one(sql: &str) -> Statement {
    let a = Classifier::new().classify(sql);
    assert_eq!(a.statements.len(), 1, "{sql}: {a:#?}");
    a.statements.into_iter().next().unwrap()
}

fn class(sql: &str) -> CommandClass {
    Classifier::new().classify(sql).class()
}

fn verb(sql: &str) -> String {
    one(sql).verb
}

fn reads(sql: &str) -> Vec<String> {
    one(sql).reads().map(str::to_owned).collect()
}

fn writes(sql: &str) -> Vec<String> {
    one(sql).writes().map(str::to_owned).collect()
}

fn functions(sql: &str) -> Vec<String> {
    one(sql).functions().map(str::to_owned).collect()
}

#[test]
fn selects_read_their_relations() {
    let s = one(
        "SELECT a.id, b.x FROM public.accounts a JOIN \"Orders\" b ON a.id = b.aid, c WHERE a.x > 1",
    );
    assert_eq!(s.class, Read);
    assert_eq!(s.verb, "SELECT");
    assert_eq!(
        s.reads().collect::<Vec<_>>(),
        vec!["public.accounts", "\"Orders\"", "c"]
    );
    assert_eq!(reads("sElEcT * fRoM Users"), vec!["users"]);
    assert_eq!(reads("SELECT * FROM \"users\""), vec!["users"]);
    assert_eq!(reads("TABLE secrets"), vec!["secrets"]);
    assert_eq!(
        reads("SELECT * FROM ONLY t1, LATERAL (SELECT * FROM t2) x, t3 * AS z"),
        vec!["t1", "t2", "t3"]
    );
    assert_eq!(
        reads("SELECT * FROM (a JOIN b USING (id)) LEFT JOIN c ON true"),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        reads("SELECT 1 WHERE EXISTS (SELECT 1 FROM hidden)"),
        vec!["hidden"]
    );
    assert_eq!(
        reads("(SELECT * FROM a) UNION (SELECT * FROM b)"),
        vec!["a", "b"]
    );
    assert_eq!(class("VALUES (1), (2)"), Read);
    assert_eq!(class("SELECT 1"), Read);
}

#[test]
fn keywords_in_odd_places_do_not_hide_tables() {
    assert_eq!(reads("SELECT extract(year FROM d) FROM t"), vec!["t"]);
    assert_eq!(reads("SELECT a IS DISTINCT FROM b FROM t"), vec!["t"]);
    assert_eq!(reads("SELECT substring(x FROM 2 FOR 3) FROM t"), vec!["t"]);
    // Identifiers that look like keywords when quoted are identifiers.
    assert_eq!(
        reads("SELECT * FROM \"select\", \"from\""),
        vec!["select", "from"]
    );
    // A comment between keyword and name changes nothing.
    assert_eq!(reads("SELECT * FROM/* x */secrets--\n"), vec!["secrets"]);
}

#[test]
fn comments_cannot_hide_statements() {
    let a = Classifier::new().classify("SELECT 1 /* ; */; -- comment\nDROP TABLE users");
    assert_eq!(a.statements.len(), 2);
    assert_eq!(a.class(), Schema);
    assert_eq!(a.statements[1].verb, "DROP TABLE");
    let a = Classifier::new().classify("SELECT '/*'; DELETE FROM t; SELECT '*/'");
    assert_eq!(a.statements.len(), 3);
    assert_eq!(a.class(), Write);
    // Nested comments: the DELETE is still inside the comment.
    assert_eq!(class("SELECT 1 /* a /* b */ ; DELETE FROM t; */"), Read);
}

#[test]
fn dml_targets_are_written() {
    let s = one("INSERT INTO audit.log (a) SELECT x FROM src");
    assert_eq!((s.class, s.verb.as_str()), (Write, "INSERT"));
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["audit.log"]);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["src"]);
    assert_eq!(
        writes("UPDATE ONLY t SET a = 1 FROM u WHERE t.id = u.id"),
        vec!["t"]
    );
    assert_eq!(
        reads("UPDATE t SET a = 1 FROM u WHERE t.id = u.id"),
        vec!["u"]
    );
    let s = one("DELETE FROM t USING u, v WHERE t.id = u.id RETURNING *");
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["t"]);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["u", "v"]);
    let s = one(
        "MERGE INTO tgt t USING src s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v, w = 1 WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
    );
    assert_eq!((s.class, s.verb.as_str()), (Write, "MERGE"));
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["tgt"]);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["src"]);
    assert_eq!(
        class("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2"),
        Write
    );
}

#[test]
fn ctes_with_dml_are_writes() {
    let s = one("WITH gone AS (DELETE FROM orders WHERE old RETURNING *) SELECT * FROM gone");
    assert_eq!(s.class, Write);
    assert_eq!(s.verb, "SELECT");
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["orders"]);
    // `gone` is the CTE, not a table.
    assert!(s.reads().all(|r| r != "gone"));
    let s = one("WITH x AS (SELECT * FROM a) INSERT INTO b SELECT * FROM x");
    assert_eq!((s.class, s.verb.as_str()), (Write, "INSERT"));
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["a"]);
    // Scoping: `secrets` in the first body is the real table (the CTE comes later).
    let s =
        one("WITH x AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM x, secrets");
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["secrets"]);
    // A schema-qualified name is never a CTE.
    assert_eq!(
        reads("WITH t AS (SELECT 1) SELECT * FROM public.t, t"),
        vec!["public.t"]
    );
    let s = one(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SEARCH DEPTH FIRST BY n SET o SELECT * FROM r",
    );
    assert_eq!(s.class, Read);
    assert_eq!(s.reads().count(), 0);
    // Nested WITH inside a subquery.
    assert_eq!(
        class("SELECT * FROM (WITH d AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM d) s"),
        Unknown.min(Write)
    );
}

#[test]
fn select_into_and_create_table_as_define_tables() {
    let s = one("SELECT * INTO TEMP copy FROM secrets");
    assert_eq!((s.class, s.verb.as_str()), (Schema, "SELECT INTO"));
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["copy"]);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["secrets"]);
    let s = one("CREATE TABLE c AS SELECT * FROM secrets");
    assert_eq!((s.class, s.verb.as_str()), (Schema, "CREATE TABLE AS"));
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["secrets"]);
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["c"]);
    // INSERT INTO is not SELECT INTO.
    assert_eq!(verb("INSERT INTO t SELECT 1"), "INSERT");
}

#[test]
fn locking_selects_are_writes() {
    let s = one("SELECT * FROM t WHERE id = 1 FOR UPDATE");
    assert_eq!((s.class, s.verb.as_str()), (Write, "SELECT FOR UPDATE"));
    assert_eq!(
        class("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED"),
        Write
    );
    assert_eq!(class("SELECT * FROM t FOR KEY SHARE"), Write);
    assert_eq!(class("SELECT substring('abc' FROM 1 FOR 2)"), Read);
}

#[test]
fn dangerous_functions_raise_the_class() {
    assert_eq!(class("SELECT pg_read_file('/etc/passwd')"), Admin);
    assert_eq!(
        functions("SELECT pg_read_file('/etc/passwd')"),
        vec!["pg_read_file"]
    );
    assert_eq!(
        class("select PG_CATALOG.PG_READ_FILE('/etc/passwd')"),
        Admin
    );
    assert_eq!(
        class("SELECT \"pg_read_file\" /* x */ ('/etc/passwd')"),
        Admin
    );
    assert_eq!(
        class(r#"SELECT U&"pg_read_fil\0065"('/etc/passwd')"#),
        Admin
    );
    assert_eq!(class("SELECT * FROM pg_ls_dir('.')"), Admin);
    assert_eq!(
        class("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
        Admin
    );
    assert_eq!(
        class("SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')"),
        Code
    );
    assert_eq!(
        class("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)"),
        Code
    );
    assert_eq!(class("SELECT lo_import('/etc/passwd')"), Admin);
    assert_eq!(class("SELECT lo_export(123, '/tmp/x')"), Admin);
    assert_eq!(class("SELECT lo_put(1, 0, 'x')"), Write);
    assert_eq!(class("SELECT lo_get(1)"), Read);
    assert_eq!(class("SELECT nextval('s')"), Write);
    assert_eq!(class("SELECT coalesce(pg_reload_conf(), true)"), Admin);
    assert_eq!(
        class("SELECT x FROM t WHERE y IN (SELECT pg_read_file('f'))"),
        Admin
    );
    // set_config is as risky as the setting it changes.
    assert_eq!(
        class("SELECT set_config('role', 'admin', false)"),
        Privilege
    );
    assert_eq!(
        class("SELECT set_config('application_name', 'x', false)"),
        Session.max_risk(Read)
    );
    assert_eq!(class("SELECT set_config($1, 'x', false)"), Unknown);
    // A column named like a function is not a call; a cast is not a call.
    assert_eq!(class("SELECT pg_read_file FROM t"), Read);
    assert_eq!(functions("SELECT x::numeric(10, 2), now()"), vec!["now"]);
}

#[test]
fn session_and_transaction_statements() {
    for (sql, v) in [
        ("BEGIN", "BEGIN"),
        ("begin isolation level serializable", "BEGIN"),
        ("START TRANSACTION READ ONLY", "START TRANSACTION"),
        ("COMMIT", "COMMIT"),
        ("END", "COMMIT"),
        ("ABORT", "ROLLBACK"),
        ("ROLLBACK TO SAVEPOINT s", "ROLLBACK"),
        ("SAVEPOINT s", "SAVEPOINT"),
        ("RELEASE SAVEPOINT s", "RELEASE"),
        ("SET application_name = 'x'", "SET"),
        ("SET LOCAL statement_timeout TO 1000", "SET"),
        ("SET TIME ZONE 'UTC'", "SET"),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET TRANSACTION",
        ),
        ("SHOW work_mem", "SHOW"),
        ("RESET statement_timeout", "RESET"),
        ("UNLISTEN *", "UNLISTEN"),
        ("DEALLOCATE ALL", "DEALLOCATE ALL"),
        ("DISCARD PLANS", "DISCARD PLANS"),
    ] {
        let s = one(sql);
        assert_eq!((s.class, s.verb.as_str()), (Session, v), "{sql}");
    }
    assert_eq!(class("COMMIT PREPARED 'x'"), Write);
}

#[test]
fn security_relevant_settings() {
    assert_eq!(
        (class("SET ROLE admin"), verb("SET ROLE admin").as_str()),
        (Privilege, "SET ROLE")
    );
    assert_eq!(class("set local role none"), Privilege);
    assert_eq!(class("SET role = 'admin'"), Privilege);
    assert_eq!(
        verb("SET SESSION AUTHORIZATION postgres"),
        "SET SESSION AUTHORIZATION"
    );
    assert_eq!(class("SET SESSION AUTHORIZATION postgres"), Privilege);
    assert_eq!(class("RESET ROLE"), Privilege);
    assert_eq!(class("RESET SESSION AUTHORIZATION"), Privilege);
    assert_eq!(class("RESET ALL"), Privilege);
    assert_eq!(class("DISCARD ALL"), Privilege);
    assert_eq!(class("SET search_path TO evil, public"), Privilege);
    assert_eq!(class("SET SCHEMA 'evil'"), Privilege);
    assert_eq!(class("SET app.tenant_id = '42'"), Privilege);
    assert_eq!(class("SET session_replication_role = replica"), Admin);
    assert_eq!(class("SET log_statement = 'none'"), Admin);
    assert_eq!(class("SET session_preload_libraries = 'x'"), Code);
    assert_eq!(class("SET no_such_setting = 1"), Unknown);
    let s = one("SET ROLE admin");
    assert!(
        s.objects
            .contains(&ObjectRef::new(ObjectKind::Role, "admin", Access::Define))
    );
}

#[test]
fn privilege_statements() {
    for sql in [
        "GRANT SELECT ON secrets TO agent",
        "REVOKE ALL ON TABLE t FROM PUBLIC",
        "GRANT admin TO agent",
        "CREATE ROLE x LOGIN SUPERUSER",
        "CREATE USER x PASSWORD 'p'",
        "ALTER ROLE agent SUPERUSER",
        "ALTER USER agent SET search_path = x",
        "DROP ROLE x",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO x",
        "ALTER TABLE t OWNER TO x",
        "ALTER TABLE t DISABLE ROW LEVEL SECURITY",
        "CREATE POLICY p ON t USING (true)",
        "REASSIGN OWNED BY a TO b",
        "DROP OWNED BY a",
        "SECURITY LABEL ON TABLE t IS 'x'",
    ] {
        assert_eq!(class(sql), Privilege, "{sql}");
    }
    let s = one("GRANT SELECT, UPDATE ON TABLE a, b TO agent, \"Ops\"");
    assert_eq!(s.verb, "GRANT");
    let roles: Vec<_> = s
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Role)
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(roles, vec!["agent", "\"Ops\""]);
}

#[test]
fn schema_admin_and_code() {
    for (sql, c, v) in [
        (
            "CREATE TABLE t (id int PRIMARY KEY, n varchar(10) REFERENCES other(id))",
            Schema,
            "CREATE TABLE",
        ),
        (
            "CREATE UNIQUE INDEX CONCURRENTLY i ON t (lower(x))",
            Schema,
            "CREATE INDEX",
        ),
        (
            "CREATE OR REPLACE VIEW v AS SELECT * FROM secrets",
            Schema,
            "CREATE VIEW",
        ),
        (
            "CREATE MATERIALIZED VIEW m AS SELECT * FROM s",
            Schema,
            "CREATE MATERIALIZED VIEW",
        ),
        ("ALTER TABLE t ADD COLUMN c int", Schema, "ALTER TABLE"),
        ("DROP TABLE IF EXISTS a, b CASCADE", Schema, "DROP TABLE"),
        ("DROP FUNCTION f(int)", Schema, "DROP FUNCTION"),
        ("CREATE SCHEMA s", Schema, "CREATE SCHEMA"),
        ("COMMENT ON TABLE t IS 'x'", Schema, "COMMENT"),
        ("ALTER SYSTEM SET work_mem = '1GB'", Admin, "ALTER SYSTEM"),
        ("VACUUM FULL t", Admin, "VACUUM"),
        ("ANALYZE t", Admin, "ANALYZE"),
        ("CHECKPOINT", Admin, "CHECKPOINT"),
        ("LOAD 'auto_explain'", Admin, "LOAD"),
        ("CREATE EXTENSION dblink", Admin, "CREATE EXTENSION"),
        ("CREATE DATABASE d", Admin, "CREATE DATABASE"),
        (
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
            Code,
            "CREATE FUNCTION",
        ),
        (
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
            Code,
            "CREATE PROCEDURE",
        ),
        ("DO $$ BEGIN PERFORM 1; END $$", Code, "DO"),
        ("CALL p(1)", Code, "CALL"),
        (
            "CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT 1",
            Code,
            "CREATE RULE",
        ),
        ("TRUNCATE TABLE a, b", Write, "TRUNCATE TABLE"),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Write, "LOCK TABLE"),
        (
            "REFRESH MATERIALIZED VIEW CONCURRENTLY m",
            Write,
            "REFRESH MATERIALIZED VIEW",
        ),
        ("NOTIFY jobs, 'x'", Write, "NOTIFY"),
        ("LISTEN jobs", Read, "LISTEN"),
    ] {
        let s = one(sql);
        assert_eq!((s.class, s.verb.as_str()), (c, v), "{sql}");
    }
    assert_eq!(
        reads("CREATE VIEW v AS SELECT * FROM secrets"),
        vec!["secrets"]
    );
    assert_eq!(
        functions("CREATE TABLE t (n int REFERENCES other(id))"),
        Vec::<String>::new()
    );
    // A default or index expression runs: dangerous calls count there too.
    assert_eq!(
        class("ALTER TABLE t ADD COLUMN c text DEFAULT pg_read_file('/etc/passwd')"),
        Admin
    );
    assert_eq!(class("CREATE INDEX ON t ((pg_read_file('x')))"), Admin);
    let s = one("LISTEN \"Jobs\"");
    assert_eq!(
        s.objects,
        vec![ObjectRef::new(ObjectKind::Channel, "Jobs", Access::Read)]
    );
}

#[test]
fn copy_direction_and_targets() {
    let s = one("COPY t (a, b) FROM STDIN WITH (FORMAT csv)");
    assert_eq!((s.class, s.verb.as_str()), (Write, "COPY"));
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["t"]);
    let s = one("COPY secrets TO STDOUT");
    assert_eq!(s.class, Read);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["secrets"]);
    assert_eq!(class("COPY (SELECT * FROM s) TO STDOUT"), Read);
    assert_eq!(class("COPY (DELETE FROM s RETURNING *) TO STDOUT"), Write);
    assert_eq!(class("COPY t FROM '/etc/passwd'"), Admin);
    assert_eq!(class("COPY t TO PROGRAM 'curl evil'"), Code);
    assert_eq!(class("copy t from program 'id'"), Code);
    assert_eq!(class("COPY t"), Unknown);
}

#[test]
fn explain_runs_only_with_analyze() {
    let s = one("EXPLAIN DELETE FROM t");
    assert_eq!((s.class, s.verb.as_str()), (Read, "EXPLAIN"));
    assert_eq!(class("EXPLAIN ANALYZE DELETE FROM t"), Write);
    assert_eq!(
        class("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1"),
        Write
    );
    assert_eq!(class("EXPLAIN (ANALYZE false) UPDATE t SET a = 1"), Read);
    assert_eq!(
        class("EXPLAIN ANALYSE VERBOSE SELECT pg_read_file('x')"),
        Admin
    );
    assert_eq!(class("EXPLAIN frobnicate"), Unknown);
}

#[test]
fn prepared_statements_are_tracked() {
    let mut cl = Classifier::new();
    let a = cl.classify("PREPARE del(int) AS DELETE FROM t WHERE id = $1");
    assert_eq!(a.class(), Session);
    assert_eq!(a.statements[0].verb, "PREPARE");
    // Not yet recorded: EXECUTE is unknown.
    assert_eq!(cl.classify("EXECUTE del(1)").class(), Unknown);
    cl.record(&a);
    let e = cl.classify("EXECUTE del(1)");
    assert_eq!(
        (e.class(), e.statements[0].verb.as_str()),
        (Write, "DELETE")
    );
    assert_eq!(e.statements[0].writes().collect::<Vec<_>>(), vec!["t"]);
    // Parameters can still call functions.
    assert_eq!(
        cl.classify("EXECUTE del(pg_terminate_backend(1))").class(),
        Admin
    );
    cl.record(&cl.classify("DEALLOCATE PREPARE del"));
    assert_eq!(cl.classify("EXECUTE del(1)").class(), Unknown);
    cl.register_prepared(
        "S1",
        Prepared {
            class: Read,
            verb: "SELECT".into(),
            objects: vec![],
        },
    );
    assert_eq!(
        cl.classify("EXECUTE S1").class(),
        Unknown,
        "names are case-folded: s1 is not S1"
    );
    assert_eq!(cl.classify("EXECUTE \"S1\"").class(), Read);
    cl.record(&cl.classify("DEALLOCATE ALL"));
    assert!(cl.prepared("S1").is_none());
}

#[test]
fn a_fetch_reads_what_its_cursor_reads() {
    let mut cl = Classifier::new();
    let d = cl.classify("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT ssn FROM customers");
    assert_eq!(d.class(), Read);
    assert_eq!(
        d.statements[0].reads().collect::<Vec<_>>(),
        vec!["customers"]
    );
    // Not yet recorded: a FETCH from it is not understood, nor one from a cursor the
    // session did not declare (a function's refcursor, say).
    assert_eq!(cl.classify("FETCH ALL FROM c").class(), Unknown);
    cl.record(&d);
    for fetch in [
        "FETCH ALL FROM c",
        "FETCH c",
        "fetch forward 10 in C;",
        "FETCH ABSOLUTE -1 FROM \"c\"",
    ] {
        let f = cl.classify(fetch);
        assert_eq!(f.class(), Read, "{fetch}");
        assert_eq!(
            f.statements[0].reads().collect::<Vec<_>>(),
            vec!["customers"],
            "{fetch}"
        );
    }
    assert_eq!(cl.classify("FETCH 1 FROM other").class(), Unknown);
    // In one text, a FETCH sees the DECLARE before it.
    let both =
        Classifier::new().classify("BEGIN; DECLARE d CURSOR FOR SELECT * FROM t; FETCH 1 FROM d");
    assert_eq!(both.statements[2].reads().collect::<Vec<_>>(), vec!["t"]);
    // A cursor over a write (a data-modifying WITH) fetches at that class.
    cl.record(
        &cl.classify("DECLARE w CURSOR FOR WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"),
    );
    assert_eq!(cl.classify("FETCH ALL FROM w").class(), Write);
    cl.record(&cl.classify("CLOSE c"));
    assert_eq!(cl.classify("FETCH ALL FROM c").class(), Unknown);
    assert_eq!(cl.classify("FETCH ALL FROM w").class(), Write);
    cl.record(&cl.classify("CLOSE ALL"));
    assert_eq!(cl.classify("FETCH ALL FROM w").class(), Unknown);
    cl.record(&cl.classify("DECLARE e CURSOR FOR SELECT 1"));
    cl.record(&cl.classify("DISCARD ALL"));
    assert_eq!(cl.classify("FETCH ALL FROM e").class(), Unknown);
    // CLOSE without a name closes nothing, and is not understood.
    cl.record(&cl.classify("DECLARE f CURSOR FOR SELECT 1"));
    assert_eq!(cl.classify("CLOSE").class(), Unknown);
    cl.record(&cl.classify("CLOSE"));
    assert_eq!(cl.classify("FETCH f").class(), Read);
}

#[test]
fn a_cursor_declared_with_hold_says_so() {
    let cl = Classifier::new();
    let hold = |sql: &str| match &cl.classify(sql).statements[0].prepared {
        Some(PreparedEffect::DeclareCursor { hold, .. }) => *hold,
        other => panic!("{sql}: {other:?}"),
    };
    assert!(hold("DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1"));
    assert!(hold("declare c binary cursor with hold for select 1"));
    assert!(!hold("DECLARE c CURSOR FOR SELECT 1"));
    assert!(!hold("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1"));
    // Words of the query are not the cursor's.
    assert!(!hold(
        "DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold"
    ));
}

#[test]
fn savepoints_are_named_as_the_server_names_them() {
    let cl = Classifier::new();
    let effect = |sql: &str| cl.classify(sql).statements[0].prepared.clone();
    let set = |n: &str| Some(PreparedEffect::Savepoint { name: n.into() });
    let back = |n: &str| Some(PreparedEffect::RollbackToSavepoint { name: n.into() });
    let release = |n: &str| Some(PreparedEffect::ReleaseSavepoint { name: n.into() });
    assert_eq!(effect("SAVEPOINT a"), set("a"));
    assert_eq!(effect("savepoint \"B c\""), set("B c"));
    assert_eq!(effect("SAVEPOINT Sp1"), set("sp1"));
    assert_eq!(effect("ROLLBACK TO SAVEPOINT a"), back("a"));
    assert_eq!(effect("rollback to a"), back("a"));
    assert_eq!(effect("ROLLBACK WORK TO SAVEPOINT a"), back("a"));
    assert_eq!(effect("ROLLBACK TRANSACTION TO \"A\""), back("A"));
    // `SAVEPOINT` is not reserved: alone, it is the name.
    assert_eq!(effect("ROLLBACK TO savepoint"), back("savepoint"));
    assert_eq!(effect("RELEASE SAVEPOINT a"), release("a"));
    assert_eq!(effect("RELEASE a"), release("a"));
    assert_eq!(effect("RELEASE savepoint"), release("savepoint"));
    for sql in [
        "ROLLBACK",
        "ABORT",
        "ROLLBACK AND CHAIN",
        "COMMIT",
        "ROLLBACK TO",
        "SAVEPOINT",
    ] {
        assert_eq!(effect(sql), None, "{sql}");
    }
    assert_eq!(
        cl.classify("ROLLBACK TO SAVEPOINT a").statements[0].verb,
        "ROLLBACK"
    );
}

#[test]
fn a_fetch_after_the_end_of_a_transaction_in_the_same_text_is_not_understood() {
    let mut cl = Classifier::new();
    cl.record(&cl.classify("DECLARE c CURSOR WITH HOLD FOR SELECT a FROM t"));
    let class = |cl: &Classifier, sql: &str| cl.classify(sql).statements.last().unwrap().class;
    assert_eq!(class(&cl, "FETCH 1 FROM c"), Read);
    for end in [
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "ROLLBACK TO SAVEPOINT s",
        "CALL p()",
    ] {
        assert_eq!(
            class(&cl, &format!("{end}; FETCH 1 FROM c")),
            Unknown,
            "{end}"
        );
    }
    assert_eq!(
        class(&cl, "DO $$ BEGIN COMMIT; END $$; FETCH 1 FROM c"),
        Unknown
    );
    // A cursor declared after it, in the same text, is known.
    assert_eq!(
        class(
            &cl,
            "COMMIT; BEGIN; DECLARE d CURSOR FOR SELECT a FROM t; FETCH 1 FROM d"
        ),
        Read
    );
    assert_eq!(class(&cl, "SAVEPOINT s; FETCH 1 FROM c"), Read);
}

#[test]
fn multi_statement_text_takes_the_riskiest_part() {
    let sql = "SELECT 1; UPDATE t SET a = 1; GRANT x TO y; SELECT $$;$$";
    let a = Classifier::new().classify(sql);
    assert_eq!(a.statements.len(), 4);
    assert_eq!(a.class(), Privilege);
    let cmd = a.to_command(sql);
    assert_eq!((cmd.class, cmd.verb.as_str()), (Privilege, "GRANT ROLE"));
    assert_eq!(a.statements[3].to_command(sql).text, "SELECT $$;$$");
    let empty = Classifier::new().classify(" -- nothing ");
    assert!(empty.statements.is_empty());
    assert_eq!(empty.to_command(" -- nothing ").verb, "EMPTY");
}

#[test]
fn anything_not_understood_is_unknown() {
    for sql in [
        "FROBNICATE everything",
        "SELECT (1",
        "SELECT 1)",
        "INSERT t VALUES (1)",
        "WITH x AS SELECT 1",
        "CREATE WIDGET w",
        "ALTER THING x",
        "EXECUTE never_prepared",
        "$1",
        "SELECT 'unterminated",
        "SELECT 1 /* unterminated",
        "SELECT $tag$ unterminated",
        "SELECT 123abc",
    ] {
        let a = Classifier::new().classify(sql);
        assert_eq!(a.class(), Unknown, "{sql}");
        assert!(!a.to_command(sql).verb.is_empty());
    }
    let a = Classifier::new().classify("SELECT 1; SELECT 'oops");
    assert!(matches!(a.error, Some(Error::Unterminated { .. })));
    assert_eq!(a.statements[0].error, a.error);
    assert_eq!(
        Classifier::new().classify_bytes(b"SELECT \xff").class(),
        Unknown
    );
}

#[test]
fn escape_string_tricks() {
    // E'\'' is one string: the DROP after it is inside the string.
    assert_eq!(class(r"SELECT E'\'; DROP TABLE t; --'"), Read);
    // Without E, the backslash is literal: the DROP is a statement.
    let a = Classifier::new().classify(r"SELECT '\'; DROP TABLE t; --'");
    assert_eq!(a.class(), Schema, "the trailing quote is in a comment");
    let a = Classifier::new().classify("SELECT '\\'; DROP TABLE t; --");
    assert_eq!(a.class(), Schema);
    assert_eq!(a.statements.len(), 2);
}

#[test]
fn standard_conforming_strings_is_followed() {
    let sql = r"SELECT 'a\'; DROP TABLE t; --'";
    let mut cl = Classifier::with_options(LexOptions {
        standard_conforming_strings: false,
        ..LexOptions::default()
    });
    assert_eq!(cl.classify(sql).class(), Read);
    // After a change the server has not confirmed, both readings count.
    cl.record(&cl.classify("SET standard_conforming_strings = on"));
    assert_eq!(cl.standard_conforming_strings(), None);
    assert_eq!(cl.classify(sql).class(), Unknown);
    assert_eq!(cl.classify("SELECT 1; DELETE FROM t").class(), Write);
    cl.set_standard_conforming_strings(true);
    assert_eq!(cl.classify(sql).class(), Schema);
    assert_eq!(
        cl.classify(r"SELECT 'a\'; DROP TABLE t; --").class(),
        Schema
    );
}

#[test]
fn commands_carry_objects_and_digest() {
    let sql = "SELECT lo_get(1) FROM Docs";
    let a = Classifier::new().classify(sql);
    let cmd = a.statements[0].to_command(sql);
    assert_eq!(cmd.protocol, Protocol::Postgres);
    assert_eq!(cmd.verb, "SELECT");
    assert_eq!(cmd.text, sql);
    assert_eq!(
        cmd.objects,
        vec![
            ObjectRef::new(ObjectKind::Function, "lo_get", Access::Execute),
            ObjectRef::new(ObjectKind::Relation, "docs", Access::Read),
            // A large object is not a relation the statement names.
            ObjectRef::new(ObjectKind::Relation, ObjectRef::ANY_RELATION, Access::Read),
            ObjectRef::new(ObjectKind::Relation, ObjectRef::ANY_RELATION, Access::Write),
        ]
    );
    assert_eq!(
        cmd.digest,
        wirewarden_core::CommandDigest::compute(Protocol::Postgres, sql.as_bytes(), [])
    );
}

#[test]
fn deep_nesting_is_bounded_not_a_stack_overflow() {
    let explain = "EXPLAIN ".repeat(10_000) + "SELECT 1";
    assert_eq!(class(&explain), Unknown);
    let prepare = "PREPARE p AS ".repeat(10_000) + "SELECT 1";
    assert_eq!(class(&prepare), Unknown);
    // Subqueries as deep as the lexer allows (255 levels) still classify.
    let deep = "SELECT * FROM (".repeat(255) + "SELECT * FROM secrets" + &") s".repeat(255);
    let s = one(&deep);
    assert_eq!(s.class, Read);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["secrets"]);
    let too_deep = "SELECT ".to_owned() + &"(".repeat(300) + "1" + &")".repeat(300);
    assert!(matches!(
        Classifier::new().classify(&too_deep).error,
        Some(Error::NestingTooDeep { .. })
    ));
}

#[test]
fn declarations_never_hide_dangerous_calls() {
    assert_eq!(
        class("COPY t FROM STDIN WHERE v LIKE pg_read_file('/etc/passwd')"),
        Admin
    );
    assert_eq!(class("EXECUTE nope(1) "), Unknown);
}

#[test]
fn read_write_transaction_modes_are_privilege() {
    assert_eq!(class("BEGIN READ WRITE"), Privilege);
    assert_eq!(
        class("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE"),
        Privilege
    );
    assert_eq!(
        class("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"),
        Privilege
    );
    assert_eq!(class("SET TRANSACTION READ WRITE"), Privilege);
    assert_eq!(class("BEGIN READ ONLY"), Session);
    assert_eq!(class("SET default_transaction_read_only = off"), Privilege);
}

#[test]
fn verbs_of_unknown_statements_are_bounded() {
    assert_eq!(verb("FROBNICATE t"), "FROBNICATE");
    let long = "x".repeat(10_000);
    assert_eq!(verb(&long), "UNKNOWN");
    assert_eq!(verb("'just a string'"), "UNKNOWN");
}

#[test]
fn object_lists_are_bounded() {
    let calls: Vec<String> = (0..2000).map(|i| format!("f{i}()")).collect();
    let sql = format!("SELECT {}", calls.join(", "));
    let s = one(&sql);
    assert_eq!(s.class, Unknown);
    assert_eq!(s.objects.len(), MAX_OBJECTS);
    let fine: Vec<String> = (0..500).map(|i| format!("f{i}()")).collect();
    let sql = format!("SELECT {}; SELECT {}", fine.join(", "), fine.join(", "));
    let a = Classifier::new().classify(&sql);
    assert_eq!(a.class(), Read);
    // The 500 functions, and the relations they may reach without naming them.
    assert_eq!(a.to_command(&sql).objects.len(), 502);
}

/// Whether a statement says it may reach relations it does not name.
fn reaches_unnamed(sql: &str) -> bool {
    let s = Classifier::new().classify(sql);
    let any = |access| {
        s.statements.iter().any(|st| {
            st.objects.contains(&ObjectRef::new(
                ObjectKind::Relation,
                ObjectRef::ANY_RELATION,
                access,
            ))
        })
    };
    let (read, write) = (any(Access::Read), any(Access::Write));
    assert_eq!(read, write, "{sql}");
    read
}

#[test]
fn a_function_the_classifier_cannot_see_into_may_reach_any_relation() {
    for sql in [
        "SELECT open_ssn('c')",
        "SELECT * FROM my_rows()",
        "SELECT body, summarize(body) FROM notes",
        "SELECT public.lower(body) FROM notes",
        "SELECT \"LOWER\"(body) FROM notes",
        "SELECT nextval('orders_id_seq')",
        "SELECT lo_get(1)",
        "SELECT query_to_xml('select * from customers', true, false, '')",
        "CALL tidy()",
        "INSERT INTO notes (body) VALUES (redact('x'))",
        "CREATE TABLE t (a int DEFAULT next_id())",
        "WITH x AS (SELECT f()) SELECT * FROM x",
    ] {
        assert!(reaches_unnamed(sql), "{sql}");
    }
    for sql in [
        "SELECT count(*), lower(body), now() FROM notes",
        "SELECT pg_catalog.upper(body), length(body) FROM notes",
        "SELECT jsonb_build_object('id', id) FROM notes",
        "SELECT coalesce(a, b), greatest(a, b) FROM t",
        "SELECT row_number() OVER (ORDER BY id) FROM notes",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT pg_sleep(0.1)",
        "CREATE TABLE t (a int REFERENCES other (id))",
        "SELECT 1",
    ] {
        assert!(!reaches_unnamed(sql), "{sql}");
    }
}

#[test]
fn a_prepared_statement_keeps_the_relations_its_functions_may_reach() {
    let mut cl = Classifier::new();
    cl.record(&cl.classify("PREPARE p AS SELECT open_ssn('c')"));
    let a = cl.classify("EXECUTE p");
    assert!(
        a.statements[0]
            .reads()
            .any(|r| r == ObjectRef::ANY_RELATION)
    );
    cl.record(&cl.classify("PREPARE q AS SELECT lower(body) FROM notes"));
    let a = cl.classify("EXECUTE q");
    assert!(
        !a.statements[0]
            .reads()
            .any(|r| r == ObjectRef::ANY_RELATION)
    );
}

#[test]
fn a_cte_hides_only_the_name_the_server_resolves_to_it() {
    // The CTE's name is the value `"Secret"`, quotes included; `"Secret"` is the table Secret.
    assert_eq!(
        reads(r#"WITH """Secret""" AS (SELECT 1) SELECT * FROM "Secret""#),
        vec!["\"Secret\""]
    );
    assert_eq!(
        reads(r#"WITH """Secret""" AS (SELECT 1) SELECT * FROM """Secret""""#),
        Vec::<String>::new()
    );
    // Unquoted folds to lowercase: `Secret` is `secret`, not the CTE `"Secret"`.
    assert_eq!(
        reads(r#"WITH "Secret" AS (SELECT 1) SELECT * FROM Secret"#),
        vec!["secret"]
    );
    assert_eq!(
        reads(r#"WITH "Secret" AS (SELECT 1) SELECT * FROM "Secret""#),
        Vec::<String>::new()
    );
    // The same name however it is written.
    assert_eq!(
        reads(r#"WITH secret AS (SELECT 1) SELECT * FROM "secret", SECRET, U&"secr\0065t""#),
        Vec::<String>::new()
    );
    assert_eq!(
        reads(r#"WITH "a.b" AS (SELECT 1) SELECT * FROM "a.b", a.b"#),
        vec!["a.b"]
    );
    assert_eq!(
        reads(r#"WITH RECURSIVE """x""" AS (SELECT 1) TABLE "x""#),
        vec!["x"]
    );
}

#[test]
fn table_reads_its_relation_wherever_it_stands() {
    for op in [
        "UNION",
        "UNION ALL",
        "UNION DISTINCT",
        "INTERSECT",
        "INTERSECT ALL",
        "EXCEPT",
        "EXCEPT DISTINCT",
    ] {
        let sql = format!("SELECT 1, 'a' {op} TABLE secret");
        assert_eq!(reads(&sql), vec!["secret"], "{sql}");
        assert_eq!(class(&sql), Read, "{sql}");
    }
    assert_eq!(reads("SELECT 1 UNION TABLE ONLY secret"), vec!["secret"]);
    assert_eq!(reads("SELECT 1 UNION TABLE s.secret *"), vec!["s.secret"]);
    assert_eq!(reads("SELECT 1 UNION (TABLE secret)"), vec!["secret"]);
    assert_eq!(
        reads("TABLE a UNION TABLE b EXCEPT TABLE c"),
        vec!["a", "b", "c"]
    );
    assert_eq!(reads("(TABLE a) UNION (TABLE b)"), vec!["a", "b"]);
    assert_eq!(reads("TABLE ONLY \"Secret\""), vec!["\"Secret\""]);
    let s = one("INSERT INTO sink TABLE secret");
    assert_eq!((s.class, s.verb.as_str()), (Write, "INSERT"));
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["sink"]);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["secret"]);
    assert_eq!(reads("INSERT INTO sink (a) TABLE secret"), vec!["secret"]);
    assert_eq!(reads("INSERT INTO sink (TABLE secret)"), vec!["secret"]);
    assert_eq!(
        reads("INSERT INTO sink SELECT 1 UNION TABLE secret"),
        vec!["secret"]
    );
    assert_eq!(
        reads("WITH c AS (TABLE secret) SELECT * FROM c"),
        vec!["secret"]
    );
    assert_eq!(
        reads("WITH c AS (SELECT 1) SELECT 1 UNION TABLE c"),
        Vec::<String>::new()
    );
    assert_eq!(
        reads("SELECT * FROM t WHERE a IN (SELECT 1 UNION TABLE secret)"),
        vec!["t", "secret"]
    );
    assert_eq!(reads("CREATE TABLE c AS TABLE secret"), vec!["secret"]);
    assert_eq!(
        reads("DECLARE c CURSOR FOR SELECT 1 UNION TABLE secret"),
        vec!["secret"]
    );
    // TABLE without a name, or with a reserved word for one, is not understood.
    for sql in [
        "SELECT 1 UNION TABLE",
        "SELECT 1 UNION TABLE select",
        "TABLE ONLY",
    ] {
        assert_eq!(class(sql), Unknown, "{sql}");
    }
    // SELECT INTO TABLE is not a TABLE query.
    assert_eq!(
        reads("SELECT * INTO TABLE copy FROM secret"),
        vec!["secret"]
    );
}

#[test]
fn explain_options_are_read_as_the_server_reads_them() {
    // Option names are identifiers: quoted and Unicode spellings of `analyze` are ANALYZE.
    for options in [
        "\"analyze\"",
        "U&\"analyz\\0065\"",
        "analyze true",
        "ANALYZE ON",
        "analyze 1",
        "analyze \"true\"",
        "analyze 'on'",
        "verbose, \"analyze\"",
        "analyze false, analyze",
        "\"analyze\" off, analyze on",
        // The server takes the last; any ANALYZE that may run counts.
        "analyze, analyze false",
        // Not what the server accepts; then overstating is the safe side.
        "\"ANALYZE\"",
        "\"analyse\"",
        "analyze 'no'",
        "analyze '0'",
        "analyze 0.0",
        "analyze false false",
        "analyze - - 0",
        "analyze false,",
        ", analyze false",
        "1, analyze false",
    ] {
        let sql = format!("EXPLAIN ({options}) UPDATE t SET a = 1");
        assert_eq!(class(&sql), Write, "{sql}");
        assert_eq!(writes(&sql), vec!["t"], "{sql}");
    }
    for options in [
        "analyze false",
        "ANALYZE OFF",
        "analyze 0",
        "analyze 00",
        "analyze -0",
        "analyze \"off\"",
        "analyze \"FALSE\"",
        "analyze 'OFF'",
        "analyze E'false'",
        "\"analyze\" false, verbose, costs off",
        "U&\"analyze\" false, format json",
        "verbose",
        "format 'json'",
    ] {
        let sql = format!("EXPLAIN ({options}) DELETE FROM t");
        assert_eq!(class(&sql), Read, "{sql}");
        assert_eq!(writes(&sql), vec!["t"], "{sql}");
    }
    assert_eq!(class("EXPLAIN ANALYZE VERBOSE DELETE FROM t"), Write);
    assert_eq!(class("EXPLAIN VERBOSE DELETE FROM t"), Read);
    assert_eq!(
        class("EXPLAIN (ANALYZE) (SELECT * FROM t FOR UPDATE)"),
        Write
    );
    assert_eq!(class("EXPLAIN (ANALYZE UPDATE t SET a = 1"), Unknown);
}

#[test]
fn tables_named_like_unreserved_keywords_are_relations() {
    for name in [
        "position", "key", "first", "last", "view", "rows", "filter", "language", "time",
        "interval", "names", "data", "value", "type", "name", "text", "values", "row", "update",
        "cube", "set", "exists", "xmltable", "by", "over",
    ] {
        for (sql, read) in [
            (format!("SELECT * FROM {name}"), true),
            (format!("SELECT * FROM t JOIN {name} ON true"), true),
            (format!("SELECT * FROM t, {name} x WHERE a = 1"), true),
            (format!("SELECT * FROM ONLY {name}"), true),
            (
                format!("SELECT * FROM t WHERE a IN (SELECT a FROM {name})"),
                true,
            ),
            (format!("TABLE {name}"), true),
            (format!("SELECT 1 UNION TABLE {name}"), true),
            (format!("UPDATE t SET a = 1 FROM {name}"), true),
            (format!("DELETE FROM t USING {name}"), true),
            (
                format!("MERGE INTO t USING {name} ON true WHEN MATCHED THEN DELETE"),
                true,
            ),
            (format!("COPY {name} TO STDOUT"), true),
            (format!("INSERT INTO {name} VALUES (1)"), false),
            (format!("UPDATE {name} SET a = 1"), false),
            (format!("DELETE FROM {name}"), false),
            (format!("TRUNCATE {name}"), false),
            (format!("LOCK TABLE {name}"), false),
            (format!("COPY {name} FROM STDIN"), false),
        ] {
            let got = if read { reads(&sql) } else { writes(&sql) };
            assert!(got.iter().any(|r| r == name), "{sql}: {got:?}");
        }
    }
    // Reserved words cannot name a table unquoted; quoted, they can.
    assert_eq!(reads("SELECT * FROM t CROSS JOIN u"), vec!["t", "u"]);
    assert_eq!(reads("SELECT * FROM \"select\""), vec!["select"]);
}

#[test]
fn functions_named_like_unreserved_keywords_are_calls() {
    for f in [
        "first", "last", "filter", "cube", "rollup", "key", "over", "view", "set", "by", "like",
        "ilike", "join", "data", "value", "name", "rows", "conflict", "varying",
    ] {
        for sql in [
            format!("SELECT {f}(x) FROM t"),
            format!("SELECT 1 WHERE {f}(1) = 1"),
            format!("SELECT * FROM {f}(1)"),
            format!("SELECT a, {f}(1) FROM t ORDER BY {f}(2)"),
            format!("UPDATE t SET a = {f}(1)"),
        ] {
            assert!(functions(&sql).iter().any(|g| g == f), "{sql}");
            assert!(reaches_unnamed(&sql), "{sql}");
        }
    }
    // Where the grammar takes the word, it is not a call.
    for sql in [
        "SELECT count(*) FILTER (WHERE a) FROM t",
        "SELECT rank() OVER (ORDER BY a) FROM t",
        "SELECT a FROM t GROUP BY CUBE (a, b)",
        "SELECT a FROM t GROUP BY ROLLUP (a)",
        "SELECT a FROM t GROUP BY GROUPING SETS ((a), (b))",
        "SELECT a FROM t ORDER BY (a) FETCH FIRST (1) ROWS ONLY",
        "SELECT a FROM t OFFSET 1 FETCH NEXT (2) ROWS ONLY",
        "SELECT position('a' IN b), extract(year FROM d), substring(b FROM 1) FROM t",
        "SELECT overlay(b PLACING 'x' FROM 1), trim(BOTH FROM b), treat(b AS text) FROM t",
        "SELECT coalesce(a, b), nullif(a, b), greatest(a), least(a) FROM t",
        "SELECT xmlelement(NAME x, xmlattributes(a AS b)), xmlforest(a) FROM t",
        "SELECT cast(a AS numeric(10, 2)), a::character varying(3), b::bit varying(2) FROM t",
        "SELECT * FROM t WHERE a LIKE ('%' || b) AND (a, b) OVERLAPS (c, d)",
        "SELECT * FROM t WHERE EXISTS (SELECT 1) AND a = ANY (ARRAY[1]) AND row(a) IS NULL",
        "SELECT * FROM (a JOIN b USING (id)) JOIN (c JOIN d ON true) ON true",
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET (a, b) = (1, 2)",
        "UPDATE t SET (a, b) = (1, 2)",
        "UPDATE t AS x SET (a) = ROW(1)",
        "UPDATE \"T\" * SET (a) = (1)",
        "WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x",
        "ALTER TABLE t SET (fillfactor = 50)",
        "CREATE TABLE t (a int, PRIMARY KEY (a), FOREIGN KEY (a) REFERENCES u (id))",
    ] {
        assert!(!reaches_unnamed(sql), "{sql}: {:?}", one(sql).objects);
    }
    // Not after BY: taken as a call, which overstates what it reaches.
    assert!(reaches_unnamed("SELECT a FROM t GROUP BY a, CUBE (b)"));
}

#[test]
fn a_table_named_if_is_named() {
    let defines = |sql: &str| -> Vec<String> {
        one(sql)
            .objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Relation && o.access == Access::Define)
            .map(|o| o.name.clone())
            .collect()
    };
    assert_eq!(defines("DROP TABLE if"), vec!["if"]);
    assert_eq!(
        defines("DROP TABLE IF EXISTS if, exists"),
        vec!["if", "exists"]
    );
    assert_eq!(defines("CREATE TABLE if (a int)"), vec!["if"]);
    assert_eq!(defines("CREATE TABLE IF NOT EXISTS if (a int)"), vec!["if"]);
    assert_eq!(defines("CREATE TABLE if AS SELECT 1"), vec!["if"]);
}

fn defines(sql: &str) -> Vec<String> {
    one(sql)
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Relation && o.access == Access::Define)
        .map(|o| o.name.clone())
        .collect()
}

#[test]
fn alter_names_a_table_named_like_its_optional_words() {
    assert_eq!(defines("ALTER TABLE if RENAME TO x"), vec!["if"]);
    assert_eq!(defines("ALTER TABLE IF EXISTS if RENAME TO x"), vec!["if"]);
    assert_eq!(
        defines("ALTER TABLE exists ADD COLUMN c int"),
        vec!["exists"]
    );
    assert_eq!(
        defines("ALTER TABLE tablespace ADD COLUMN c int"),
        vec!["tablespace"]
    );
    assert_eq!(
        defines("ALTER TABLE IF EXISTS ONLY t * ADD COLUMN c int"),
        vec!["t"]
    );
    assert_eq!(
        defines("ALTER TABLE ONLY (secret) RENAME TO x"),
        vec!["secret"]
    );
    assert_eq!(
        defines("ALTER FOREIGN TABLE IF EXISTS ONLY (secret) RENAME TO x"),
        vec!["secret"]
    );
    assert_eq!(defines("ALTER SEQUENCE if RESTART"), vec!["if"]);
    assert_eq!(
        defines("ALTER VIEW tablespace RENAME TO x"),
        vec!["tablespace"]
    );
    assert_eq!(
        defines("ALTER MATERIALIZED VIEW if RENAME TO x"),
        vec!["if"]
    );
    assert_eq!(
        defines("ALTER INDEX IF EXISTS exists RENAME TO x"),
        vec!["exists"]
    );
    // Every relation in the tablespace, none of them named.
    for sql in [
        "ALTER TABLE ALL IN TABLESPACE ts SET TABLESPACE ts2",
        "ALTER INDEX ALL IN TABLESPACE ts OWNED BY r SET TABLESPACE ts2 NOWAIT",
        "ALTER MATERIALIZED VIEW ALL IN TABLESPACE ts SET TABLESPACE ts2",
    ] {
        assert_eq!(defines(sql), vec![ObjectRef::ANY_RELATION], "{sql}");
    }
    // ALL names no role.
    let s = one("ALTER ROLE ALL SET work_mem = '1MB'");
    assert!(
        !s.objects.iter().any(|o| o.kind == ObjectKind::Role),
        "{s:?}"
    );
    // A relation that cannot be read is not taken as none.
    assert_eq!(class("ALTER TABLE ONLY (a, b) RENAME TO x"), Unknown);
    assert_eq!(class("ALTER TABLE ALL RENAME TO x"), Unknown);
}

#[test]
fn alter_names_the_other_relations_it_touches() {
    assert_eq!(
        defines("ALTER TABLE t ATTACH PARTITION secret FOR VALUES IN (1)"),
        vec!["t", "secret"]
    );
    assert_eq!(
        defines("ALTER TABLE t DETACH PARTITION secret CONCURRENTLY"),
        vec!["t", "secret"]
    );
    assert_eq!(
        defines("ALTER TABLE t NO INHERIT secret, INHERIT other"),
        vec!["t", "secret", "other"]
    );
    assert_eq!(defines("ALTER TABLE t ADD COLUMN inherit int"), vec!["t"]);
    assert_eq!(
        reads("ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES secret (id)"),
        vec!["secret"]
    );
    assert_eq!(
        defines("ALTER TRIGGER tr ON secret RENAME TO x"),
        vec!["secret"]
    );
    assert_eq!(
        defines("ALTER POLICY p ON secret RENAME TO x"),
        vec!["secret"]
    );
    assert_eq!(
        defines("ALTER RULE r ON secret RENAME TO x"),
        vec!["secret"]
    );
}

#[test]
fn truncate_and_lock_read_only_before_each_table() {
    assert_eq!(
        writes("TRUNCATE a, ONLY secret, b * RESTART IDENTITY"),
        vec!["a", "secret", "b"]
    );
    assert_eq!(writes("TRUNCATE TABLE ONLY (secret)"), vec!["secret"]);
    assert_eq!(
        writes("LOCK TABLE ONLY (secret), other IN SHARE MODE"),
        vec!["secret", "other"]
    );
    assert_eq!(class("TRUNCATE TABLE only"), Unknown);
    assert_eq!(class("LOCK ONLY (a, b)"), Unknown);
}

fn settings(sql: &str) -> Vec<String> {
    one(sql)
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Setting)
        .map(|o| o.name.clone())
        .collect()
}

#[test]
fn setting_names_are_compared_as_the_server_looks_them_up() {
    // The server finds a setting by its name's value, whatever its case, quoted or not.
    for (sql, class_, name) in [
        (
            "SET \"STANDARD_CONFORMING_STRINGS\" = off",
            Session,
            "standard_conforming_strings",
        ),
        ("SET \"Search_Path\" = x", Privilege, "search_path"),
        ("SET LOCAL \"Search_Path\" TO x", Privilege, "search_path"),
        ("SET SESSION \"Work_Mem\" = '1MB'", Session, "work_mem"),
        ("RESET \"Search_Path\"", Privilege, "search_path"),
        ("SHOW \"Search_Path\"", Session, "search_path"),
        ("SET U&\"search\\005Fpath\" = x", Privilege, "search_path"),
        ("SET \"App\".\"Tenant\" = 1", Privilege, "app.tenant"),
        ("SET \"App.Tenant\" = 1", Privilege, "app.tenant"),
        (
            "ALTER SYSTEM SET \"Log_Statement\" = 'none'",
            Admin,
            "log_statement",
        ),
        ("ALTER SYSTEM RESET \"Work_Mem\"", Admin, "work_mem"),
        (
            "SELECT set_config('Search_Path', 'x', false)",
            Privilege,
            "search_path",
        ),
    ] {
        let s = one(sql);
        assert_eq!(s.class, class_, "{sql}");
        assert_eq!(settings(sql), vec![name], "{sql}");
    }
    // `SET "role" = x` is SET ROLE however it is spelled.
    let s = one("SET \"ROLE\" TO admin");
    assert_eq!((s.class, s.verb.as_str()), (Privilege, "SET ROLE"));
    assert!(
        s.objects
            .iter()
            .any(|o| o.kind == ObjectKind::Role && o.name == "admin"),
        "{s:?}"
    );
    // SESSION, LOCAL and SET are not reserved: they may start a setting's name.
    assert_eq!(settings("SET local.tenant = 1"), vec!["local.tenant"]);
    assert_eq!(class("SET session.tenant = 1"), Privilege);
    assert_eq!(
        settings("SET SESSION local.tenant TO 1"),
        vec!["local.tenant"]
    );
    assert_eq!(settings("ALTER SYSTEM SET set.x = 1"), vec!["set.x"]);
}

#[test]
fn a_quoted_standard_conforming_strings_makes_it_unknown() {
    let mut cl = Classifier::new();
    assert_eq!(cl.standard_conforming_strings(), Some(true));
    let a = cl.classify("SET \"STANDARD_CONFORMING_STRINGS\" = off");
    cl.record(&a);
    assert_eq!(cl.standard_conforming_strings(), None);
}

/// `relation_expr` as DML writes it: `ONLY ( name )` is a table like `ONLY name`, and what
/// the grammar refuses there (`ONLY name *`, a star or a second pair of parentheses inside)
/// is not understood.
#[test]
fn only_in_parentheses_names_the_table() {
    assert_eq!(writes("UPDATE ONLY (secret) SET a = 1"), vec!["secret"]);
    assert_eq!(class("UPDATE ONLY (secret) SET a = 1"), Write);
    assert_eq!(
        writes("UPDATE ONLY (public.secret) AS s SET a = 1 FROM other WHERE s.id = other.id"),
        vec!["public.secret"]
    );
    assert_eq!(
        reads("UPDATE ONLY (secret) s SET a = 1 FROM other WHERE s.id = other.id"),
        vec!["other"]
    );
    assert_eq!(
        writes("DELETE FROM ONLY (secret) WHERE id = 1"),
        vec!["secret"]
    );
    let s = one("DELETE FROM ONLY (secret) AS s USING other WHERE s.id = other.id");
    assert_eq!(s.class, Write);
    assert_eq!(s.writes().collect::<Vec<_>>(), vec!["secret"]);
    assert_eq!(s.reads().collect::<Vec<_>>(), vec!["other"]);
    assert_eq!(
        writes("MERGE INTO ONLY (secret) USING other ON true WHEN MATCHED THEN DO NOTHING"),
        vec!["secret"]
    );
    assert_eq!(reads("TABLE ONLY (secret)"), vec!["secret"]);
    assert_eq!(reads("SELECT 1 UNION TABLE ONLY (secret)"), vec!["secret"]);
    assert_eq!(writes("UPDATE ONLY secret SET a = 1"), vec!["secret"]);
    assert_eq!(writes("UPDATE secret * SET a = 1"), vec!["secret"]);
    for sql in [
        "UPDATE ONLY secret * SET a = 1",
        "UPDATE ONLY (secret *) SET a = 1",
        "UPDATE ONLY ((secret)) SET a = 1",
        "UPDATE ONLY (secret SET a = 1",
        "UPDATE ONLY (secret, other) SET a = 1",
        "DELETE FROM ONLY secret * WHERE true",
        "DELETE FROM ONLY () WHERE true",
        "TABLE ONLY (secret *)",
    ] {
        assert_eq!(class(sql), Unknown, "{sql}");
    }
}

fn stored(sql: &str) -> Vec<(String, Access)> {
    one(sql)
        .objects
        .into_iter()
        .filter(|o| o.kind == ObjectKind::Setting)
        .map(|o| (o.name, o.access))
        .collect()
}

/// `ALTER ROLE … SET` and `ALTER DATABASE … SET` store a default for later sessions: the
/// setting is named (policy sees it) as defined, not written, so it says nothing of how this
/// session lexes; the class rises as setting it would.
#[test]
fn stored_defaults_name_their_setting() {
    let define = |name: &str| vec![(name.to_owned(), Access::Define)];
    assert_eq!(
        stored("ALTER ROLE r SET search_path = public"),
        define("search_path")
    );
    assert_eq!(
        stored("ALTER USER r SET \"Search_Path\" TO public"),
        define("search_path")
    );
    assert_eq!(
        stored("ALTER ROLE ALL IN DATABASE d SET work_mem TO '1MB'"),
        define("work_mem")
    );
    assert_eq!(
        stored("ALTER ROLE CURRENT_USER SET search_path FROM CURRENT"),
        define("search_path")
    );
    assert_eq!(stored("ALTER ROLE r SET x.y = 1"), define("x.y"));
    assert_eq!(
        stored("ALTER ROLE r SET TIME ZONE 'UTC'"),
        define("timezone")
    );
    assert_eq!(
        stored("ALTER ROLE r SET NAMES 'UTF8'"),
        define("client_encoding")
    );
    assert_eq!(
        stored("ALTER ROLE r SET SCHEMA 'public'"),
        define("search_path")
    );
    assert_eq!(stored("ALTER ROLE r SET ROLE admin"), define("role"));
    assert_eq!(
        stored("ALTER ROLE r SET SESSION AUTHORIZATION admin"),
        define("session_authorization")
    );
    assert_eq!(
        stored("ALTER ROLE r SET XML OPTION document"),
        define("xmloption")
    );
    assert_eq!(
        stored("ALTER ROLE r RESET search_path"),
        define("search_path")
    );
    assert_eq!(stored("ALTER ROLE r RESET TIME ZONE"), define("timezone"));
    // A role named like the clause's keywords is the role.
    assert_eq!(stored("ALTER ROLE set SET names = 1"), define("names"));
    assert_eq!(stored("ALTER ROLE r RESET ALL"), vec![]);
    assert_eq!(
        stored("ALTER ROLE r SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        vec![]
    );
    assert_eq!(stored("ALTER ROLE r WITH LOGIN"), vec![]);
    let s = one("ALTER DATABASE d SET standard_conforming_strings = off");
    assert_eq!(s.class, Admin);
    assert!(!s.changes_lexing());
    assert_eq!(
        stored("ALTER DATABASE d SET standard_conforming_strings = off"),
        define("standard_conforming_strings")
    );
    assert!(!one("ALTER ROLE r RESET standard_conforming_strings").changes_lexing());
    // A routine stores settings for its runs; `SET SCHEMA` moves it.
    assert_eq!(
        stored("ALTER FUNCTION f(int, text) SET search_path = public"),
        define("search_path")
    );
    assert_eq!(
        stored("ALTER PROCEDURE p() SECURITY INVOKER SET work_mem TO '1MB' RESET x.y"),
        vec![
            ("work_mem".to_owned(), Access::Define),
            ("x.y".to_owned(), Access::Define)
        ]
    );
    assert_eq!(
        stored("ALTER ROUTINE s.set(set int) SET standard_conforming_strings FROM CURRENT"),
        define("standard_conforming_strings")
    );
    assert!(!one("ALTER FUNCTION f() SET standard_conforming_strings = off").changes_lexing());
    assert_eq!(stored("ALTER FUNCTION f() SET SCHEMA other"), vec![]);
    assert_eq!(stored("ALTER FUNCTION f() RESET ALL"), vec![]);
    assert_eq!(stored("ALTER FUNCTION f() RENAME TO g"), vec![]);
    // `SET TABLESPACE` moves the database; `SET tablespace = x` is the generic form.
    assert_eq!(stored("ALTER DATABASE d SET TABLESPACE ts"), vec![]);
    assert_eq!(
        stored("ALTER DATABASE d SET tablespace TO x"),
        define("tablespace")
    );
    // As setting it: a search path is a privilege matter, preloaded libraries run code,
    // and a setting not known is not understood.
    assert_eq!(class("ALTER ROLE r SET search_path = public"), Privilege);
    assert_eq!(
        class("ALTER ROLE r SET session_preload_libraries = 'x'"),
        Code
    );
    assert_eq!(class("ALTER DATABASE d SET no_such_setting = 1"), Unknown);
    assert_eq!(class("ALTER ROLE r SET"), Unknown);
    // `ALTER SYSTEM` writes the server's value, which a reload gives this session too.
    assert!(one("ALTER SYSTEM SET standard_conforming_strings = off").changes_lexing());
    assert!(one("SET standard_conforming_strings = off").changes_lexing());
}
