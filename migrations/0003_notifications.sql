CREATE TABLE `notification_attempts` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`delivery_id` text NOT NULL,
	`at` integer NOT NULL,
	`http_status` integer,
	`error` text,
	`duration_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `notification_attempts_delivery_idx` ON `notification_attempts` (`delivery_id`,`at`);--> statement-breakpoint
CREATE TABLE `notification_deliveries` (
	`id` text PRIMARY KEY NOT NULL,
	`target_id` text NOT NULL,
	`event` text NOT NULL,
	`body` text NOT NULL,
	`dedupe_key` text,
	`status` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer,
	`last_status` integer,
	`last_error` text,
	`created_at` integer NOT NULL,
	`delivered_at` integer
);
--> statement-breakpoint
CREATE INDEX `notification_deliveries_target_idx` ON `notification_deliveries` (`target_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `notification_deliveries_due_idx` ON `notification_deliveries` (`target_id`,`status`,`next_attempt_at`);--> statement-breakpoint
CREATE UNIQUE INDEX `notification_deliveries_dedupe_unique` ON `notification_deliveries` (`target_id`,`dedupe_key`);--> statement-breakpoint
CREATE TABLE `notification_node_status` (
	`node_id` text PRIMARY KEY NOT NULL,
	`online` integer NOT NULL,
	`at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `notification_targets` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`url` text NOT NULL,
	`secret` text NOT NULL,
	`events` text NOT NULL,
	`format` text NOT NULL,
	`created_by` text NOT NULL,
	`created_at` integer NOT NULL,
	`deleted_at` integer
);
