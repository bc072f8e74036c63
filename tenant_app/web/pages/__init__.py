"""One module per area of the UI; each exposes `router` (an APIRouter using WebRoute)."""
