-- Which ThumbnailJob a job row belongs to (Kubernetes mode): the first resource that used the job
-- id binds it, and another resource naming the same id (a hand-written `spec.jobId`) is refused
-- instead of overwriting, or on deletion destroying, this job's thumbnails and row.
ALTER TABLE jobs ADD COLUMN resource_namespace TEXT;
ALTER TABLE jobs ADD COLUMN resource_name TEXT;
ALTER TABLE jobs ADD COLUMN resource_uid TEXT;
