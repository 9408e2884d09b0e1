"""The session store: SQLAlchemy 2 async models, repository functions, migrations."""
