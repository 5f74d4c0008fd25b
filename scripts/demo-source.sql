-- The sample source database of `make demo` and the pipeline tests: a small shop.
DROP TABLE IF EXISTS public.order_items, public.orders, public.customers;
CREATE TABLE public.customers (
  id         bigint PRIMARY KEY,
  email      text NOT NULL,
  name       text NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE TABLE public.orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES public.customers (id),
  status      text NOT NULL,
  total       numeric(12, 2) NOT NULL,
  ordered_at  timestamptz NOT NULL
);
CREATE TABLE public.order_items (
  order_id   bigint NOT NULL REFERENCES public.orders (id),
  line_no    integer NOT NULL,
  sku        text NOT NULL,
  quantity   integer NOT NULL,
  unit_price numeric(10, 2) NOT NULL,
  PRIMARY KEY (order_id, line_no)
);
INSERT INTO public.customers
  SELECT g, 'customer' || g || '@example.com', 'Customer ' || g,
         timestamptz '2024-01-01' + g * interval '1 hour'
  FROM generate_series(1, 2000) g;
INSERT INTO public.orders
  SELECT g, 1 + (g * 7919) % 2000, (ARRAY['new', 'paid', 'shipped', 'delivered'])[1 + g % 4],
         round((10 + (g * 37) % 990)::numeric, 2), timestamptz '2024-02-01' + g * interval '7 minutes'
  FROM generate_series(1, 12000) g;
INSERT INTO public.order_items
  SELECT o, l, 'SKU-' || ((o * 31 + l) % 500), 1 + (o + l) % 5, round((1 + (o * l) % 200)::numeric, 2)
  FROM generate_series(1, 12000) o, generate_series(1, 3) l;
