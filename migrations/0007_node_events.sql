CREATE TABLE `node_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`node_id` text NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`from_version` text,
	`to_version` text,
	`message` text
);
--> statement-breakpoint
CREATE INDEX `node_events_node_at_idx` ON `node_events` (`node_id`,`at`);