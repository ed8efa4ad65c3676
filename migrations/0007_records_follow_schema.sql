-- A record's unencrypted part (`public`) may hold only fields that its collection's
-- schema, as committed, classes as public. Nodes seal fields by their cached copy of the
-- schema; a node whose copy is older than a change made elsewhere (a field made personal)
-- would otherwise store that field in plaintext. The statement fails instead (SQLSTATE
-- 23514, this trigger's name as the constraint, the field as the column), and the node
-- reloads the schema and writes again.
--
-- The schema row is read without a lock of its own (the foreign key already holds it
-- `for key share`): the committed schema as of this statement. A lock that waited for a
-- schema change in progress would order it against the tenant's audit-head lock, which a
-- record write takes before or after the record row, depending on its path: deadlocks.
create function records_public_fields_are_public() returns trigger
language plpgsql as $$
declare
    offending text;
begin
    if jsonb_typeof(new.public) <> 'object' then
        -- The check constraint refuses the row.
        return new;
    end if;
    -- One query per row: the first field of the row's unencrypted part that the schema
    -- classes otherwise. Fields the schema does not name pass (a removed field); no such
    -- collection passes (the foreign key refuses the row).
    select f.key into offending
      from collections c, jsonb_each(c.schema -> 'fields') f
     where c.tenant_id = new.tenant_id and c.name = new.collection
       and new.public ? f.key
       and f.value ->> 'class' is distinct from 'public'
     limit 1;
    if offending is not null then
        raise exception 'field of collection % is not public in its schema', new.collection
            using errcode = 'check_violation',
                  constraint = 'records_public_fields_are_public',
                  column = offending;
    end if;
    return new;
end
$$;

create trigger records_public_fields_are_public
    before insert or update of public on records
    -- A record without unencrypted fields needs no look at the schema.
    for each row when (new.public <> '{}'::jsonb)
    execute function records_public_fields_are_public();
