// The compiled part of levee::fleet: the hiredis adapter and the fleet link.
#include <levee/fleet/impl/fleet.ipp>
#include <levee/fleet/impl/redis_connection.ipp>
