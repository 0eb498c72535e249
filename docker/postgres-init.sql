-- The owner (msp_owner) runs migrations and must bypass RLS for the few cross-tenant system sweeps.
-- The application role is a plain login role: it is neither owner nor BYPASSRLS, so RLS binds it.
ALTER ROLE msp_owner BYPASSRLS;
CREATE ROLE msp_app LOGIN PASSWORD 'msp_app' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
