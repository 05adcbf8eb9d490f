//! The knowledge the classifier works from: which functions raise a statement's class,
//! which settings are security relevant, and which object types CREATE/ALTER/DROP know.

use wirewarden_core::CommandClass::{self, Admin, Code, Privilege, Schema, Session, Write};

/// The class a call to a known function raises a statement to, by the function's unqualified
/// name (matched whatever the schema, so a look-alike in another schema is treated the same).
pub(crate) fn function_class(name: &str, qualified: &str) -> Option<CommandClass> {
    let class = match name {
        // Server files, processes and replication: administration.
        "pg_read_file"
        | "pg_read_binary_file"
        | "pg_ls_dir"
        | "pg_ls_logdir"
        | "pg_ls_waldir"
        | "pg_ls_tmpdir"
        | "pg_ls_archive_statusdir"
        | "pg_ls_logicalsnapdir"
        | "pg_ls_logicalmapdir"
        | "pg_ls_replslotdir"
        | "pg_stat_file"
        | "pg_file_write"
        | "pg_file_rename"
        | "pg_file_unlink"
        | "pg_file_sync"
        | "pg_logdir_ls"
        | "pg_terminate_backend"
        | "pg_cancel_backend"
        | "pg_reload_conf"
        | "pg_rotate_logfile"
        | "pg_switch_wal"
        | "pg_create_restore_point"
        | "pg_backup_start"
        | "pg_backup_stop"
        | "pg_start_backup"
        | "pg_stop_backup"
        | "pg_promote"
        | "pg_wal_replay_pause"
        | "pg_wal_replay_resume"
        | "pg_create_physical_replication_slot"
        | "pg_create_logical_replication_slot"
        | "pg_drop_replication_slot"
        | "pg_copy_physical_replication_slot"
        | "pg_copy_logical_replication_slot"
        | "pg_replication_slot_advance"
        | "pg_logical_slot_get_changes"
        | "pg_logical_slot_peek_changes"
        | "pg_logical_slot_get_binary_changes"
        | "pg_logical_slot_peek_binary_changes"
        | "pg_logical_emit_message"
        | "pg_replication_origin_create"
        | "pg_replication_origin_drop"
        | "pg_log_backend_memory_contexts"
        | "pg_stat_reset"
        | "pg_stat_reset_shared"
        | "pg_stat_reset_single_table_counters"
        | "pg_stat_reset_single_function_counters"
        | "pg_stat_reset_slru"
        | "pg_stat_reset_replication_slot"
        | "pg_stat_reset_subscription_stats"
        | "pg_import_system_collations"
        | "lo_import"
        | "lo_export" => Admin,
        // Run SQL given as text, or read relations the statement text does not name, or reach
        // other servers: code chosen by the client.
        "dblink"
        | "dblink_exec"
        | "dblink_connect"
        | "dblink_connect_u"
        | "dblink_send_query"
        | "dblink_open"
        | "dblink_fetch"
        | "dblink_get_result"
        | "query_to_xml"
        | "query_to_xmlschema"
        | "query_to_xml_and_xmlschema"
        | "cursor_to_xml"
        | "cursor_to_xmlschema"
        | "table_to_xml"
        | "table_to_xmlschema"
        | "table_to_xml_and_xmlschema"
        | "schema_to_xml"
        | "schema_to_xmlschema"
        | "schema_to_xml_and_xmlschema"
        | "database_to_xml"
        | "database_to_xmlschema"
        | "database_to_xml_and_xmlschema"
        | "ts_stat"
        | "crosstab"
        | "crosstab2"
        | "crosstab3"
        | "crosstab4"
        | "connectby"
        | "pg_background_launch"
        | "run_command_on_workers" => Code,
        // Change data although called from a SELECT.
        "lo_create" | "lo_creat" | "lo_unlink" | "lo_put" | "lo_from_bytea" | "lowrite"
        | "lo_truncate" | "lo_truncate64" | "nextval" | "setval" | "pg_notify" => Write,
        _ => match qualified {
            "cron.schedule" | "cron.schedule_in_database" | "cron.alter_job" => Code,
            _ => return None,
        },
    };
    Some(class)
}

/// The class of changing a server setting with `SET`, `RESET`, `set_config` or `ALTER SYSTEM`.
///
/// - `role`, `session_authorization`, `search_path` (decides which function or table an
///   unqualified name means), `row_security`, the read-only switches, and every custom
///   setting with a dot in its name (applications keep row-level-security context such as
///   `app.tenant_id` there) are [`Privilege`].
/// - settings that load libraries are [`Code`]; superuser-only switches that weaken
///   integrity or auditing (`session_replication_role` disables triggers and foreign keys,
///   `log_*`, `zero_damaged_pages`, …) are [`Admin`].
/// - a list of ordinary client settings is [`Session`]; any other name is `Unknown`.
pub(crate) fn setting_class(name: &str) -> CommandClass {
    let n = name.to_ascii_lowercase();
    if n.contains('.') {
        return Privilege;
    }
    match n.as_str() {
        "role"
        | "session_authorization"
        | "search_path"
        | "row_security"
        | "default_transaction_read_only"
        | "transaction_read_only" => Privilege,
        "session_preload_libraries"
        | "local_preload_libraries"
        | "shared_preload_libraries"
        | "dynamic_library_path"
        | "jit_provider" => Code,
        "session_replication_role"
        | "lo_compat_privileges"
        | "allow_system_table_mods"
        | "allow_in_place_tablespaces"
        | "ignore_system_indexes"
        | "zero_damaged_pages"
        | "ignore_checksum_failure"
        | "ignore_invalid_pages"
        | "data_sync_retry"
        | "max_stack_depth"
        | "temp_file_limit"
        | "lc_messages"
        | "commit_delay"
        | "wal_compression"
        | "wal_consistency_checking"
        | "wal_init_zero"
        | "wal_recycle"
        | "update_process_title"
        | "password_encryption" => Admin,
        _ if n.starts_with("log_")
            || n.starts_with("debug_")
            || n.starts_with("trace_")
            || n.starts_with("track_") =>
        {
            Admin
        }
        _ if n.starts_with("enable_") => Session,
        "application_name"
        | "statement_timeout"
        | "lock_timeout"
        | "idle_in_transaction_session_timeout"
        | "idle_session_timeout"
        | "work_mem"
        | "maintenance_work_mem"
        | "hash_mem_multiplier"
        | "temp_buffers"
        | "client_encoding"
        | "client_min_messages"
        | "datestyle"
        | "timezone"
        | "time zone"
        | "intervalstyle"
        | "extra_float_digits"
        | "bytea_output"
        | "standard_conforming_strings"
        | "escape_string_warning"
        | "backslash_quote"
        | "default_transaction_isolation"
        | "transaction_isolation"
        | "default_transaction_deferrable"
        | "transaction_deferrable"
        | "synchronous_commit"
        | "random_page_cost"
        | "seq_page_cost"
        | "cpu_tuple_cost"
        | "cpu_index_tuple_cost"
        | "cpu_operator_cost"
        | "parallel_setup_cost"
        | "parallel_tuple_cost"
        | "effective_cache_size"
        | "effective_io_concurrency"
        | "maintenance_io_concurrency"
        | "jit"
        | "jit_above_cost"
        | "jit_inline_above_cost"
        | "jit_optimize_above_cost"
        | "plan_cache_mode"
        | "geqo"
        | "geqo_threshold"
        | "join_collapse_limit"
        | "from_collapse_limit"
        | "default_statistics_target"
        | "constraint_exclusion"
        | "cursor_tuple_fraction"
        | "max_parallel_workers_per_gather"
        | "max_parallel_maintenance_workers"
        | "force_parallel_mode"
        | "lc_monetary"
        | "lc_numeric"
        | "lc_time"
        | "default_text_search_config"
        | "xmloption"
        | "xmlbinary"
        | "array_nulls"
        | "quote_all_identifiers"
        | "transform_null_equals"
        | "gin_fuzzy_search_limit"
        | "default_table_access_method"
        | "default_tablespace"
        | "temp_tablespaces"
        | "check_function_bodies"
        | "default_toast_compression"
        | "vacuum_cost_delay"
        | "vacuum_cost_limit"
        | "vacuum_freeze_min_age"
        | "vacuum_freeze_table_age"
        | "vacuum_multixact_freeze_min_age"
        | "vacuum_multixact_freeze_table_age"
        | "gin_pending_list_limit"
        | "idle_in_transaction_timeout"
        | "tcp_keepalives_idle"
        | "tcp_keepalives_interval"
        | "tcp_keepalives_count"
        | "tcp_user_timeout"
        | "client_connection_check_interval"
        | "recursive_worktree_limit"
        | "enable_partitionwise_join"
        | "compute_query_id"
        | "exit_on_error"
        | "vacuum_failsafe_age"
        | "names" => Session,
        _ => CommandClass::Unknown,
    }
}

/// What CREATE/ALTER/DROP of an object type is, and what kind of object its name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    Relation,
    Function,
    Role,
    Namespace,
    Other,
}

/// Object types, longest first within each leading word; each with its CREATE class.
pub(crate) const OBJECT_TYPES: &[(&[&str], CommandClass, NameKind)] = &[
    (&["access", "method"], Admin, NameKind::Other),
    (&["aggregate"], Schema, NameKind::Function),
    (&["cast"], Schema, NameKind::Other),
    (&["collation"], Schema, NameKind::Other),
    (&["conversion"], Schema, NameKind::Other),
    (&["database"], Admin, NameKind::Namespace),
    (&["domain"], Schema, NameKind::Other),
    (&["event", "trigger"], Admin, NameKind::Other),
    (&["extension"], Admin, NameKind::Other),
    (&["foreign", "data", "wrapper"], Admin, NameKind::Other),
    (&["foreign", "table"], Schema, NameKind::Relation),
    (&["function"], Code, NameKind::Function),
    (&["group"], Privilege, NameKind::Role),
    (&["index"], Schema, NameKind::Relation),
    (&["language"], Code, NameKind::Other),
    (&["large", "object"], Privilege, NameKind::Other),
    (&["materialized", "view"], Schema, NameKind::Relation),
    (&["operator", "class"], Schema, NameKind::Other),
    (&["operator", "family"], Schema, NameKind::Other),
    (&["operator"], Schema, NameKind::Other),
    (&["policy"], Privilege, NameKind::Other),
    (&["procedure"], Code, NameKind::Function),
    (&["publication"], Admin, NameKind::Other),
    (&["role"], Privilege, NameKind::Role),
    (&["routine"], Code, NameKind::Function),
    (&["rule"], Code, NameKind::Other),
    (&["schema"], Schema, NameKind::Namespace),
    (&["sequence"], Schema, NameKind::Relation),
    (&["server"], Admin, NameKind::Other),
    (&["statistics"], Schema, NameKind::Other),
    (&["subscription"], Admin, NameKind::Other),
    (&["table"], Schema, NameKind::Relation),
    (&["tablespace"], Admin, NameKind::Other),
    (
        &["text", "search", "configuration"],
        Schema,
        NameKind::Other,
    ),
    (&["text", "search", "dictionary"], Schema, NameKind::Other),
    (&["text", "search", "parser"], Admin, NameKind::Other),
    (&["text", "search", "template"], Admin, NameKind::Other),
    (&["transform"], Code, NameKind::Other),
    (&["trigger"], Schema, NameKind::Other),
    (&["type"], Schema, NameKind::Other),
    (&["user", "mapping"], Admin, NameKind::Other),
    (&["user"], Privilege, NameKind::Role),
    (&["view"], Schema, NameKind::Relation),
];

/// Unquoted words that are followed by `(` without being function calls.
pub(crate) fn is_non_function_keyword(w: &str) -> bool {
    matches!(
        w,
        "all"
            | "and"
            | "any"
            | "array"
            | "as"
            | "asc"
            | "between"
            | "bigint"
            | "bit"
            | "boolean"
            | "breadth"
            | "by"
            | "case"
            | "cast"
            | "char"
            | "character"
            | "check"
            | "coalesce"
            | "collate"
            | "conflict"
            | "constraint"
            | "cube"
            | "current"
            | "cycle"
            | "dec"
            | "decimal"
            | "default"
            | "depth"
            | "desc"
            | "distinct"
            | "do"
            | "double"
            | "else"
            | "end"
            | "escape"
            | "except"
            | "exclude"
            | "exists"
            | "extract"
            | "filter"
            | "first"
            | "float"
            | "for"
            | "foreign"
            | "from"
            | "greatest"
            | "group"
            | "grouping"
            | "having"
            | "ilike"
            | "in"
            | "include"
            | "int"
            | "integer"
            | "intersect"
            | "interval"
            | "into"
            | "is"
            | "join"
            | "key"
            | "last"
            | "lateral"
            | "least"
            | "like"
            | "limit"
            | "materialized"
            | "national"
            | "nchar"
            | "normalize"
            | "not"
            | "nullif"
            | "nulls"
            | "numeric"
            | "offset"
            | "on"
            | "only"
            | "or"
            | "order"
            | "over"
            | "overlay"
            | "partition"
            | "position"
            | "precision"
            | "primary"
            | "real"
            | "recursive"
            | "references"
            | "returning"
            | "returns"
            | "rollup"
            | "row"
            | "rows"
            | "search"
            | "select"
            | "set"
            | "sets"
            | "similar"
            | "smallint"
            | "some"
            | "substring"
            | "table"
            | "tablesample"
            | "then"
            | "time"
            | "timestamp"
            | "to"
            | "treat"
            | "trim"
            | "union"
            | "unique"
            | "using"
            | "values"
            | "varchar"
            | "varying"
            | "view"
            | "when"
            | "where"
            | "window"
            | "with"
            | "within"
            | "xmlattributes"
            | "xmlconcat"
            | "xmlelement"
            | "xmlexists"
            | "xmlforest"
            | "xmlnamespaces"
            | "xmlparse"
            | "xmlpi"
            | "xmlroot"
            | "xmlserialize"
            | "xmltable"
            | "language"
            | "immutable"
            | "stable"
            | "volatile"
    )
}
