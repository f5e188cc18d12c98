"""The central station: a separate process that watches one or more daemons (shards) and serves
a live web page of every bed, the alarm list and the strips."""
