"""Device inventory: a tenant's workstations, laptops, printers, servers and clinical devices."""
