"""Work orders: reported → dispatched (to the asset's owning department) → accepted → resolved → closed."""
