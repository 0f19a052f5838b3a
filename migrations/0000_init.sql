CREATE TABLE `api_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`role` text NOT NULL,
	`token_hash` text NOT NULL,
	`created_by` text NOT NULL,
	`created_at` integer NOT NULL,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_tokens_hash_unique` ON `api_tokens` (`token_hash`);--> statement-breakpoint
CREATE TABLE `nodes` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`hostname` text,
	`agent_version` text,
	`libvirt_version` text,
	`protocol_version` integer,
	`connected` integer DEFAULT false NOT NULL,
	`last_seen_at` integer,
	`join_token_hash` text,
	`join_token_expires_at` integer,
	`credential_hash` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `nodes_name_unique` ON `nodes` (`name`);--> statement-breakpoint
CREATE UNIQUE INDEX `nodes_join_token_hash_unique` ON `nodes` (`join_token_hash`);--> statement-breakpoint
CREATE UNIQUE INDEX `nodes_credential_hash_unique` ON `nodes` (`credential_hash`);--> statement-breakpoint
CREATE TABLE `requests` (
	`id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`vm_id` text,
	`node_id` text,
	`params` text,
	`status` text NOT NULL,
	`deadline_at` integer NOT NULL,
	`requested_by` text NOT NULL,
	`vm_generation` integer,
	`result` text,
	`error` text,
	`created_at` integer NOT NULL,
	`sent_at` integer,
	`acked_at` integer,
	`finished_at` integer
);
--> statement-breakpoint
CREATE INDEX `requests_vm_idx` ON `requests` (`vm_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `requests_node_status_idx` ON `requests` (`node_id`,`status`);--> statement-breakpoint
CREATE TABLE `vm_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`vm_id` text NOT NULL,
	`at` integer NOT NULL,
	`actor` text NOT NULL,
	`action` text NOT NULL,
	`from_state` text,
	`to_state` text,
	`source` text,
	`message` text,
	`reason` text,
	`request_id` text
);
--> statement-breakpoint
CREATE INDEX `vm_events_vm_at_idx` ON `vm_events` (`vm_id`,`at`);--> statement-breakpoint
CREATE TABLE `vms` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`node_id` text,
	`state` text NOT NULL,
	`libvirt_state` text,
	`vcpus` integer DEFAULT 0 NOT NULL,
	`memory_mib` integer DEFAULT 0 NOT NULL,
	`generation` integer DEFAULT 0 NOT NULL,
	`transition_request_id` text,
	`missing` integer DEFAULT false NOT NULL,
	`missing_since` integer,
	`state_updated_at` integer NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`node_id`) REFERENCES `nodes`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `vms_node_name_idx` ON `vms` (`node_id`,`name`,`id`);--> statement-breakpoint
CREATE INDEX `vms_state_name_idx` ON `vms` (`state`,`name`,`id`);--> statement-breakpoint
CREATE INDEX `vms_name_idx` ON `vms` (`name`,`id`);