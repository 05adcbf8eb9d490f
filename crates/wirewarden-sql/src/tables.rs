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

/// PostgreSQL's reserved keywords, and those reserved but allowed as function or type
/// names (`pg_get_keywords()` categories `R` and `T`): unquoted, none of them names a
/// relation.
pub(crate) fn is_reserved_keyword(w: &str) -> bool {
    matches!(
        w,
        "all"
            | "analyse"
            | "analyze"
            | "and"
            | "any"
            | "array"
            | "as"
            | "asc"
            | "asymmetric"
            | "both"
            | "case"
            | "cast"
            | "check"
            | "collate"
            | "column"
            | "constraint"
            | "create"
            | "current_catalog"
            | "current_date"
            | "current_role"
            | "current_time"
            | "current_timestamp"
            | "current_user"
            | "default"
            | "deferrable"
            | "desc"
            | "distinct"
            | "do"
            | "else"
            | "end"
            | "except"
            | "false"
            | "fetch"
            | "for"
            | "foreign"
            | "from"
            | "grant"
            | "group"
            | "having"
            | "in"
            | "initially"
            | "intersect"
            | "into"
            | "lateral"
            | "leading"
            | "limit"
            | "localtime"
            | "localtimestamp"
            | "not"
            | "null"
            | "offset"
            | "on"
            | "only"
            | "or"
            | "order"
            | "placing"
            | "primary"
            | "references"
            | "returning"
            | "select"
            | "session_user"
            | "some"
            | "symmetric"
            | "table"
            | "then"
            | "to"
            | "trailing"
            | "true"
            | "union"
            | "unique"
            | "user"
            | "using"
            | "variadic"
            | "when"
            | "where"
            | "window"
            | "with"
    ) || is_type_function_keyword(w)
}

/// Keywords reserved except as function or type names (`pg_get_keywords()` category `T`).
pub(crate) fn is_type_function_keyword(w: &str) -> bool {
    matches!(
        w,
        "authorization"
            | "binary"
            | "collation"
            | "concurrently"
            | "cross"
            | "current_schema"
            | "freeze"
            | "full"
            | "ilike"
            | "inner"
            | "is"
            | "isnull"
            | "join"
            | "left"
            | "like"
            | "natural"
            | "notnull"
            | "outer"
            | "overlaps"
            | "right"
            | "similar"
            | "tablesample"
            | "verbose"
    )
}

/// Keywords that may name a relation or column but never an unqualified function
/// (`pg_get_keywords()` category `C`): followed by `(` they are grammar (`position(a IN b)`,
/// `extract(…)`, `coalesce(…)`, `xmlelement(…)`) or a type (`numeric(10, 2)`).
pub(crate) fn is_column_name_keyword(w: &str) -> bool {
    matches!(
        w,
        "between"
            | "bigint"
            | "bit"
            | "boolean"
            | "char"
            | "character"
            | "coalesce"
            | "dec"
            | "decimal"
            | "exists"
            | "extract"
            | "float"
            | "greatest"
            | "grouping"
            | "inout"
            | "int"
            | "integer"
            | "interval"
            | "least"
            | "national"
            | "nchar"
            | "none"
            | "normalize"
            | "nullif"
            | "numeric"
            | "out"
            | "overlay"
            | "position"
            | "precision"
            | "real"
            | "row"
            | "setof"
            | "smallint"
            | "substring"
            | "time"
            | "timestamp"
            | "treat"
            | "trim"
            | "values"
            | "varchar"
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
    )
}

/// Built-in functions of `pg_catalog` that compute from their arguments and the session
/// alone: they read and write no relation. Every other function (user-defined, from an
/// extension, or a built-in that reads a table named in a string, a sequence, a large object
/// or the output of a query) may reach relations the statement does not name. Sorted, for
/// a binary search.
const REACHES_NO_RELATION: &[&str] = &[
    "abbrev",
    "abs",
    "acos",
    "age",
    "array_agg",
    "array_append",
    "array_cat",
    "array_dims",
    "array_fill",
    "array_length",
    "array_lower",
    "array_ndims",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_json",
    "array_to_string",
    "array_upper",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "avg",
    "bit_and",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "broadcast",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "clock_timestamp",
    "concat",
    "concat_ws",
    "corr",
    "cos",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "date_bin",
    "date_part",
    "date_trunc",
    "daterange",
    "decode",
    "degrees",
    "dense_rank",
    "div",
    "encode",
    "every",
    "exp",
    "factorial",
    "family",
    "first_value",
    "floor",
    "format",
    "gcd",
    "gen_random_uuid",
    "generate_series",
    "generate_subscripts",
    "host",
    "hostmask",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "initcap",
    "int4range",
    "int8range",
    "isempty",
    "isfinite",
    "json_agg",
    "json_array_elements",
    "json_array_elements_text",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_each",
    "json_each_text",
    "json_extract_path",
    "json_extract_path_text",
    "json_object",
    "json_object_agg",
    "json_object_keys",
    "json_strip_nulls",
    "json_typeof",
    "jsonb_agg",
    "jsonb_array_elements",
    "jsonb_array_elements_text",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_each",
    "jsonb_each_text",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_insert",
    "jsonb_object",
    "jsonb_object_agg",
    "jsonb_object_keys",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_pretty",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "lower",
    "lower_inc",
    "lower_inf",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "masklen",
    "max",
    "md5",
    "min",
    "min_scale",
    "mod",
    "mode",
    "netmask",
    "network",
    "normalize",
    "now",
    "nth_value",
    "ntile",
    "num_nonnulls",
    "num_nulls",
    "numrange",
    "octet_length",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pg_advisory_lock",
    "pg_advisory_unlock",
    "pg_advisory_unlock_all",
    "pg_advisory_xact_lock",
    "pg_backend_pid",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock",
    "pg_typeof",
    "pi",
    "plainto_tsquery",
    "pow",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "random",
    "range_agg",
    "rank",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_substr",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "set_masklen",
    "setweight",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sign",
    "sin",
    "split_part",
    "sqrt",
    "starts_with",
    "statement_timestamp",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "string_to_array",
    "string_to_table",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "timeofday",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "to_tsquery",
    "to_tsvector",
    "transaction_timestamp",
    "translate",
    "trim_array",
    "trim_scale",
    "trunc",
    "ts_headline",
    "ts_rank",
    "ts_rank_cd",
    "tsrange",
    "tstzrange",
    "unistr",
    "unnest",
    "upper",
    "upper_inc",
    "upper_inf",
    "var_pop",
    "var_samp",
    "variance",
    "version",
    "websearch_to_tsquery",
    "width_bucket",
];

/// Whether a call of the function rendered as `name` (as the classifier reports it) reads
/// and writes no relation: one of [`REACHES_NO_RELATION`], unqualified or in `pg_catalog`.
/// A name in any other schema, or quoted out of its folded spelling, is another function.
pub(crate) fn reaches_no_relation(name: &str) -> bool {
    let bare = name.strip_prefix("pg_catalog.").unwrap_or(name);
    REACHES_NO_RELATION.binary_search(&bare).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_that_reach_no_relation_are_sorted_and_not_dangerous() {
        assert!(REACHES_NO_RELATION.windows(2).all(|w| w[0] < w[1]));
        for f in REACHES_NO_RELATION {
            assert_eq!(function_class(f, f), None, "{f} raises the class");
            assert!(!f.contains(['.', '"']), "{f}");
        }
    }

    #[test]
    fn keyword_categories_do_not_overlap() {
        for w in ["position", "values", "time", "xmltable", "coalesce"] {
            assert!(is_column_name_keyword(w) && !is_reserved_keyword(w), "{w}");
        }
        for w in ["left", "join", "like", "verbose"] {
            assert!(is_type_function_keyword(w) && is_reserved_keyword(w), "{w}");
            assert!(!is_column_name_keyword(w), "{w}");
        }
        for w in [
            "first", "key", "filter", "view", "data", "name", "text", "update", "cube",
        ] {
            assert!(!is_reserved_keyword(w) && !is_column_name_keyword(w), "{w}");
        }
    }

    #[test]
    fn only_the_catalog_spelling_of_a_known_function_is_known() {
        assert!(reaches_no_relation("lower"));
        assert!(reaches_no_relation("pg_catalog.lower"));
        assert!(!reaches_no_relation("public.lower"));
        assert!(!reaches_no_relation("\"LOWER\""));
        assert!(!reaches_no_relation("pg_catalog.pg_read_file"));
        assert!(!reaches_no_relation("open_ssn"));
        assert!(!reaches_no_relation("nextval"));
        assert!(!reaches_no_relation("query_to_xml"));
    }
}
