// pickup(8): from maildrop to cleanup; the logic is in PickupCore.
import PickupCore

Pickup.main(CommandLine.arguments)
