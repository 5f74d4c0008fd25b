-- aws/retry.lua — the SDKs' "standard" retry mode (REFERENCE.md, Retries):
--   * at most max_attempts attempts in all (default 3; AWS_MAX_ATTEMPTS, profile max_attempts,
--     per call opts.max_attempts);
--   * the delay before retry n is random(0, 1) * min(2^(n-1), 20) seconds;
--   * retried: HTTP 500, 502, 503, 504; connection errors and timeouts; the transient and
--     throttling codes below; never other 4xx;
--   * a retry quota per client: 500 tokens, a retry costs 5 (10 after a timeout), an empty
--     bucket stops retrying; a success on the first attempt gives 1 back. Beyond REFERENCE.md,
--     as botocore does: a success after retries gives back the cost of its last retry.
local M = {}

M.MAX_BACKOFF = 20
M.QUOTA = 500
M.RETRY_COST = 5
M.TIMEOUT_COST = 10
M.NO_RETRY_INCREMENT = 1

local transient_codes = {
  RequestTimeout = true, RequestTimeoutException = true, PriorRequestNotComplete = true,
}
local throttling_codes = {
  Throttling = true, ThrottlingException = true, ThrottledException = true,
  RequestThrottledException = true, TooManyRequestsException = true,
  ProvisionedThroughputExceededException = true, TransactionInProgressException = true,
  RequestLimitExceeded = true, BandwidthLimitExceeded = true, LimitExceededException = true,
  RequestThrottled = true, SlowDown = true, EC2ThrottledException = true,
}
local retry_status = { [500] = true, [502] = true, [503] = true, [504] = true }
M.throttling_codes = throttling_codes
M.transient_codes = transient_codes

-- Is this failure retryable? `aws_code` is the AWS code (without "aws."), `status` the HTTP
-- status, `net` the low-level error object of a failed transfer (http.*).
function M.retryable(aws_code, status, net)
  if net then return net.retryable == true end
  if aws_code and (throttling_codes[aws_code] or transient_codes[aws_code]) then return true end
  if status and retry_status[status] then return true end
  return false
end

-- Delay before retry n (n = 1 for the first retry).
function M.delay(n, random)
  random = random or math.random
  return random() * math.min(2 ^ (n - 1), M.MAX_BACKOFF)
end

-- A quota bucket (one per client).
function M.new_quota(capacity)
  local q = { capacity = capacity or M.QUOTA }
  q.available = q.capacity
  -- Take the cost of a retry; false when the bucket cannot pay for it.
  function q:acquire(is_timeout)
    local cost = is_timeout and M.TIMEOUT_COST or M.RETRY_COST
    if self.available < cost then return false end
    self.available = self.available - cost
    return cost
  end
  function q:release(amount)
    self.available = math.min(self.capacity, self.available + amount)
  end
  return q
end

return M
