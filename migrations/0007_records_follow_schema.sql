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
    schema_fields jsonb;
    field text;
begin
    select c.schema -> 'fields' into schema_fields
      from collections c
     where c.tenant_id = new.tenant_id and c.name = new.collection;
    if schema_fields is null or jsonb_typeof(new.public) <> 'object' then
        -- No such collection, or no object: the foreign key or the check refuses the row.
        return new;
    end if;
    for field in select jsonb_object_keys(new.public) loop
        if schema_fields ? field
           and coalesce(schema_fields -> field ->> 'class', '') <> 'public' then
            raise exception 'field of collection % is not public in its schema', new.collection
                using errcode = 'check_violation',
                      constraint = 'records_public_fields_are_public',
                      column = field;
        end if;
    end loop;
    return new;
end
$$;

create trigger records_public_fields_are_public
    before insert or update of public on records
    for each row execute function records_public_fields_are_public();
