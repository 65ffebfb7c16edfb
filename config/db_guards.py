"""PostgreSQL triggers that hold the row guards (config.guards) for writes that bypass the ORM.

Migrations install them with `RunPython(install(...), uninstall(...))`; on other databases they do
nothing, and the model guards alone hold the rules. A refused write raises SQLSTATE 23000, which
Django reports as an IntegrityError.
"""

from collections.abc import Callable, Iterable


def _run_on_postgresql(sql: str) -> Callable:
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "postgresql":
            # No parameters: the % signs are PL/pgSQL placeholders, not the driver's.
            schema_editor.execute(sql, params=None)

    return run


def _guard_trigger(table: str, body: str, *, suffix: str = "guard", events: str = "UPDATE OR DELETE") -> tuple:
    """Return (forward, backward) operations installing `body` as the table's BEFORE UPDATE OR DELETE guard."""
    name = f"{table}_{suffix}"
    forward = f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{body}
END $$;
DROP TRIGGER IF EXISTS {name} ON {table};
CREATE TRIGGER {name} BEFORE {events} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}();
"""
    backward = f"DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}();"
    return _run_on_postgresql(forward), _run_on_postgresql(backward)


def _changed(columns: Iterable[str]) -> str:
    return " OR ".join(f"NEW.{column} IS DISTINCT FROM OLD.{column}" for column in columns)


def fixed_once_in_use(
    table: str,
    columns: Iterable[str],
    *,
    label: str,
    in_use: str = "seats_requested_at",
    never_raised: Iterable[str] = (),
) -> tuple:
    """Return (forward, backward) operations: once `in_use` is set, `columns` never change and the row stays.

    `never_raised` columns may still go down, never up (a line's quantity). `label` names the row in the
    message, e.g. "tenant" gives "tenant 12: ...".
    """
    columns = list(columns)
    raised = "".join(
        f"""
  IF NEW.{column} > OLD.{column} THEN
    RAISE EXCEPTION '{label} %: seats have been requested against it, so its {column} cannot go up', OLD.id
      USING ERRCODE = '23000';
  END IF;"""
        for column in never_raised
    )
    return _guard_trigger(
        table,
        f"""  IF OLD.{in_use} IS NULL THEN
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION '{label} % cannot be deleted: seats have been requested against it', OLD.id
      USING ERRCODE = '23000';
  END IF;
  IF NEW.{in_use} IS NULL OR {_changed(columns)} THEN
    RAISE EXCEPTION '{label} %: seats have been requested against it, so {", ".join(columns)} are fixed', OLD.id
      USING ERRCODE = '23000';
  END IF;{raised}
  RETURN NEW;""",
    )


def fixed_for_good(table: str, columns: Iterable[str], *, label: str) -> tuple:
    """Return (forward, backward) operations: `columns` never change once the row exists, in use or not."""
    columns = list(columns)
    return _guard_trigger(
        table,
        f"""  IF {_changed(columns)} THEN
    RAISE EXCEPTION '{label} %: its {", ".join(columns)} never change', OLD.id USING ERRCODE = '23000';
  END IF;
  RETURN NEW;""",
        suffix="identity",
        events="UPDATE",
    )


def service_only(
    table: str, columns: Iterable[str], *, label: str, transitions: dict[str, Iterable[str]] | None = None
) -> tuple:
    """Return (forward, backward) operations: `columns` never change, rows are never deleted, and
    the status moves only along `transitions` (when given)."""
    moves = ""
    if transitions:
        pairs = ", ".join(
            f"('{source}', '{target}')" for source, targets in sorted(transitions.items()) for target in sorted(targets)
        )
        moves = f"""
  IF NEW.status IS DISTINCT FROM OLD.status AND (OLD.status, NEW.status) NOT IN ({pairs}) THEN
    RAISE EXCEPTION '{label} % cannot go from % to %', OLD.id, OLD.status, NEW.status USING ERRCODE = '23000';
  END IF;"""
    return _guard_trigger(
        table,
        f"""  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION '{label} % is never deleted', OLD.id USING ERRCODE = '23000';
  END IF;
  IF {_changed(columns)} THEN
    RAISE EXCEPTION '{label} %: what it binds is fixed once it exists', OLD.id USING ERRCODE = '23000';
  END IF;{moves}
  RETURN NEW;""",
    )


def earliest(model, column: str, **match):
    """Return a subquery of the earliest non-null `column` of `model` rows matching the outer row.

    For migrations that mark rows already in use: `earliest(OrderLine, "seats_requested_at",
    product_id="pk")` is the first time seats were requested on any line of the product.
    """
    from django.db.models import OuterRef, Subquery

    return Subquery(
        model.objects.filter(**{key: OuterRef(value) for key, value in match.items()})
        .exclude(**{f"{column}__isnull": True})
        .order_by(column)
        .values(column)[:1]
    )
