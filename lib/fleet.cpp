// The compiled part of levee::fleet: the hiredis adapter and the fleet link.
#include <levee/impl/fleet.ipp>
#include <levee/impl/redis_connection.ipp>
