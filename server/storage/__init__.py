"""SQLAlchemy storage: tables, repositories and the unit of work. The only place with SQL."""
