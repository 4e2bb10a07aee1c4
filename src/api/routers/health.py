from fastapi import APIRouter

from api.models import Health
from offload.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> Health:
    return Health(stage=get_settings().stage)
