-- SQL of the ingestion pipeline. `{name}` slots take identifiers or composed fragments; `%s` are parameters.

-- name: advisory_lock
SELECT pg_advisory_xact_lock(hashtext(%s));

-- name: table_columns
SELECT column_name
FROM information_schema.columns
WHERE table_schema = %s AND table_name = %s
ORDER BY ordinal_position;

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: create_rejected_rows
CREATE UNLOGGED TABLE IF NOT EXISTS {table} (
    job_id      text    NOT NULL,
    domain      text    NOT NULL,
    source_file text    NOT NULL,
    sheet       text    NOT NULL,
    source_row  integer,
    reason      text    NOT NULL,
    raw         json    NOT NULL DEFAULT '{{}}'::json
);

-- name: create_unknown_names
CREATE UNLOGGED TABLE IF NOT EXISTS {table} (
    job_id       text    NOT NULL,
    domain       text    NOT NULL,
    source_file  text    NOT NULL,
    name         text    NOT NULL,
    temporary_id text    NOT NULL,
    occurrences  integer NOT NULL,
    first_row    integer NOT NULL
);

-- name: create_provider_ids
CREATE TABLE IF NOT EXISTS {table} (
    job_id     text NOT NULL,
    domain     text NOT NULL,
    name       text NOT NULL,
    company_id text NOT NULL,
    PRIMARY KEY (job_id, domain, name)
);

-- name: lookup_provider_ids
SELECT name, company_id FROM {table} WHERE job_id = %s AND domain = %s AND name = ANY(%s);

-- name: remember_provider_id
INSERT INTO {table} (job_id, domain, name, company_id) VALUES (%s, %s, %s, %s)
ON CONFLICT (job_id, domain, name) DO NOTHING;

-- name: create_lookup_budget
CREATE TABLE IF NOT EXISTS {table} (
    job_id text    NOT NULL,
    domain text    NOT NULL,
    used   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, domain)
);

-- name: create_job_index
CREATE INDEX IF NOT EXISTS {index} ON {table} ({columns});

-- name: delete_job_file
DELETE FROM {table} WHERE {job} = %s AND {file} = %s;

-- name: delete_job
DELETE FROM {table} WHERE {job} = %s;

-- name: copy_in
COPY {table} ({columns}) FROM STDIN;

-- name: count_job_rows
SELECT count(*) FROM {table} WHERE _job_id = %s;

-- name: duplicate_keys
SELECT {key}, count(*) AS copies
FROM {table}
WHERE _job_id = %s
GROUP BY {key}
HAVING count(*) > 1
ORDER BY copies DESC
LIMIT %s;

-- name: null_counts
SELECT {counts} FROM {table} WHERE _job_id = %s;

-- name: backfill_reference
INSERT INTO {reference} AS r ({reference_columns})
SELECT DISTINCT ON ({source_key}) {source_columns}, %s
FROM {staging}
WHERE _job_id = %s AND {key_not_null}
ORDER BY {order}
ON CONFLICT ({reference_key}) DO UPDATE SET {fill}
WHERE {gaps};

-- name: count_missing_references
SELECT count(*) FROM (
    SELECT DISTINCT {source_key}
    FROM {staging} s
    WHERE s._job_id = %s AND {key_not_null}
      AND NOT EXISTS (SELECT 1 FROM {reference} r WHERE {join})
) missing;

-- name: count_distinct_keys
SELECT count(*) FROM (SELECT DISTINCT {source_key} FROM {staging} WHERE _job_id = %s AND {key_not_null}) k;

-- name: lock_target
LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE;

-- name: delete_by_key
DELETE FROM {target} t
USING (SELECT DISTINCT {key} FROM {staging} WHERE _job_id = %s) s
WHERE {join};

-- name: count_matching_keys
SELECT count(*) FROM {target} t
WHERE EXISTS (SELECT 1 FROM {staging} s WHERE s._job_id = %s AND {join});

-- name: insert_from_staging
INSERT INTO {target} ({columns})
SELECT {columns} FROM {staging} WHERE _job_id = %s;

-- name: lookup_names
SELECT {name_column}, {id_column} FROM {table} WHERE {name_column} = ANY(%s);

-- name: ensure_budget
INSERT INTO {table} (job_id, domain, used) VALUES (%s, %s, 0)
ON CONFLICT (job_id, domain) DO NOTHING;

-- name: lock_budget
SELECT used FROM {table} WHERE job_id = %s AND domain = %s FOR UPDATE;

-- name: set_budget
UPDATE {table} SET used = %s WHERE job_id = %s AND domain = %s;

-- name: rejected_rows_of_job
SELECT domain, source_file, sheet, source_row, reason, raw
FROM {table}
WHERE job_id = %s
ORDER BY domain, source_file, source_row NULLS FIRST;

-- name: unknown_names_of_job
SELECT domain, name, temporary_id, sum(occurrences)::integer AS occurrences,
       min(source_file) AS first_file
FROM {table}
WHERE job_id = %s
GROUP BY domain, name, temporary_id
ORDER BY domain, name;

-- name: add_column
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {definition};

-- name: schema_exists
SELECT to_regnamespace(%s) IS NOT NULL;

-- name: reject_duplicate_keys
WITH ranked AS (
    SELECT ctid AS at, _source_sheet, _source_row,
           first_value(_source_row) OVER (PARTITION BY {key} ORDER BY _source_row) AS first_row,
           row_number() OVER (PARTITION BY {key} ORDER BY _source_row) AS copy
    FROM {staging}
    WHERE _job_id = %(job)s AND _source_file = %(file)s
), dropped AS (
    DELETE FROM {staging} d
    USING ranked r
    WHERE d.ctid = r.at AND r.copy > 1
    RETURNING d.*, r.first_row
)
INSERT INTO {rejected} (job_id, domain, source_file, sheet, source_row, reason, raw)
SELECT %(job)s, %(domain)s, %(file)s, d._source_sheet, d._source_row,
       'duplicate primary key (' || {reason} || '), first at row ' || d.first_row,
       (to_jsonb(d) - '_job_id' - '_source_file' - '_source_sheet' - '_source_row' - 'first_row')::json
FROM dropped d;

-- name: delete_by_source_file
DELETE FROM {target} t
WHERE t._source_file IN (SELECT DISTINCT _source_file FROM {staging} WHERE _job_id = %s);

-- name: count_by_source_file
SELECT count(*) FROM {target} t
WHERE t._source_file IN (SELECT DISTINCT _source_file FROM {staging} WHERE _job_id = %s);

-- name: has_unique_key
SELECT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL
      AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
           FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = %s::text[]
);

-- name: create_unique_key
CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} ({key});

-- name: resolve_provisional_ids
UPDATE {staging} s
SET {id_column} = r.{ref_id}
FROM {reference} r
WHERE s._job_id = %s AND r.{ref_name} = s.{name_column} AND r.{ref_id} IS NOT NULL
  AND s.{id_column} = {provisional} AND r.{ref_id} <> s.{id_column};

-- name: delete_by_key_or_provisional
DELETE FROM {target} t
USING (SELECT DISTINCT {key}, {provisional} AS _provisional FROM {staging} s WHERE s._job_id = %s) s
WHERE {join} AND (t.{id_column} = s.{id_column} OR t.{id_column} = s._provisional);

-- name: count_matching_keys_or_provisional
SELECT count(*) FROM {target} t
WHERE EXISTS (SELECT 1 FROM {staging} s WHERE s._job_id = %s AND {join}
              AND (t.{id_column} = s.{id_column} OR t.{id_column} = {provisional}));

-- name: rejected_rows_per_file
SELECT source_file, sheet, source_row, reason
FROM (
    SELECT source_file, sheet, source_row, reason,
           row_number() OVER (PARTITION BY source_file ORDER BY source_row NULLS FIRST) AS n
    FROM {table}
    WHERE job_id = %s
) r
WHERE n <= %s
ORDER BY source_file, source_row NULLS FIRST;
